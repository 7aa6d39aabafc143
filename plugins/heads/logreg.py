"""logreg: logistic regression on standardized embeddings (scikit-learn), stored as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from review_toolkit.plugin_api import (
    FittedHead,
    PluginOption,
    Standardizer,
    as_probabilities,
    load_arrays,
    positive_numbers,
    Search,
    save_arrays,
    sigmoid,
)


class LogisticModel:
    def __init__(self, standardizer: Standardizer, coef: np.ndarray, intercept: float, c: float):
        self.standardizer = standardizer
        self.coef = coef
        self.intercept = intercept
        self.c = c

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        # The standardization folded into the weights: one pass over the features instead of three
        # (a GPU's scores of thousands of reviews would otherwise wait on it). numpy's own loop,
        # not BLAS: a matrix-vector product gains nothing from BLAS's threads, which wake on every
        # core and then spin there while the next reviews are tokenized and launched on the GPU.
        weights = self.coef / self.standardizer.scale
        bias = self.intercept - float(self.standardizer.mean @ weights)
        return as_probabilities(sigmoid(np.einsum("ij,j->i", np.asarray(features), weights) + bias))

    def save(self, directory: Path) -> None:
        save_arrays(
            directory,
            {"mean": self.standardizer.mean, "scale": self.standardizer.scale, "coef": self.coef},
            {"type": "logistic_regression", "intercept": self.intercept, "C": self.c},
        )


class LogregHead(FittedHead):
    description = "Logistic regression on standardized embeddings; C chosen on the validation split."
    declared_options = (
        PluginOption(
            "c_grid", tuple[float, ...], (0.01, 0.1, 1.0, 10.0),
            "Inverse regularisation strengths tried; the validation split picks one.", check=positive_numbers,
            search=Search(low=1e-4, high=100.0, log=True),  # tune tries one C at a time
        ),
    )

    def fit(self, train_features, train_labels, validation_features, validation_labels, *, seed, class_weight=None):
        # Lazy: scikit-learn takes seconds to import, and loading a fitted head needs only NumPy.
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score

        standardizer = Standardizer.fit(np.asarray(train_features, dtype=np.float64))
        x_train, x_val = standardizer(train_features), standardizer(validation_features)
        best = None
        for c in self.options["c_grid"]:
            model = LogisticRegression(C=c, max_iter=5000, class_weight=class_weight, random_state=seed)
            model.fit(x_train, train_labels)
            score = f1_score(validation_labels, model.predict(x_val), average="macro")
            if best is None or score > best[0]:
                best = (score, c, model)
        _, c, model = best
        return LogisticModel(standardizer, model.coef_[0].astype(np.float64), float(model.intercept_[0]), c)

    def load(self, directory: Path) -> LogisticModel:
        arrays, parameters = load_arrays(directory)
        return LogisticModel(
            Standardizer(arrays["mean"], arrays["scale"]), arrays["coef"], float(parameters["intercept"]), parameters["C"]
        )
