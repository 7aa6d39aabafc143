"""Built-in classifier heads."""
