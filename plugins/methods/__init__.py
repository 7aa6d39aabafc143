"""Built-in adaptation methods."""
