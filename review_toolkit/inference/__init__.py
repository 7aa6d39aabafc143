"""Scoring reviews with a trained classifier: embeddings (and their cache), calibration, files in and out."""
