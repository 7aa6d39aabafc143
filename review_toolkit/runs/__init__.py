"""The run directory: its layout, writing it atomically, its manifest and model card, loading it back."""
