"""Training: composing a backbone, a method and a head, then fitting them (Trainer or scikit-learn)."""
