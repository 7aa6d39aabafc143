"""svm: an RBF support vector machine with C and gamma chosen on the validation split."""

from __future__ import annotations

from itertools import product
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


class RbfSvmModel:
    """Decision function of a fitted RBF SVC, mapped to probabilities by Platt scaling.

    Platt's sigmoid is fitted on the validation split's decision values, so the
    probabilities are not fitted on the points that made the support vectors.
    """

    def __init__(self, standardizer, support_vectors, dual_coef, intercept, gamma, platt_a, platt_b, c):
        self.standardizer = standardizer
        self.support_vectors = support_vectors
        self.dual_coef = dual_coef
        self.intercept = intercept
        self.gamma = gamma
        self.platt_a = platt_a
        self.platt_b = platt_b
        self.c = c

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        x = self.standardizer(features)
        squared = (
            (x**2).sum(axis=1)[:, None]
            + (self.support_vectors**2).sum(axis=1)[None, :]
            - 2.0 * x @ self.support_vectors.T
        )
        kernel = np.exp(-self.gamma * np.maximum(squared, 0.0))
        return kernel @ self.dual_coef + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return as_probabilities(sigmoid(self.platt_a * self.decision_function(features) + self.platt_b))

    def save(self, directory: Path) -> None:
        save_arrays(
            directory,
            {
                "mean": self.standardizer.mean,
                "scale": self.standardizer.scale,
                "support_vectors": self.support_vectors,
                "dual_coef": self.dual_coef,
            },
            {
                "type": "rbf_svm",
                "intercept": self.intercept,
                "gamma": self.gamma,
                "platt_a": self.platt_a,
                "platt_b": self.platt_b,
                "C": self.c,
            },
        )


class SvmHead(FittedHead):
    description = "RBF SVM on standardized embeddings; C and gamma chosen on validation, Platt-scaled probabilities."
    declared_options = (
        PluginOption(
            "c_grid", tuple[float, ...], (0.3, 1.0, 3.0, 10.0), "C values tried on the validation split.",
            check=positive_numbers, search=Search(low=0.1, high=100.0, log=True),
        ),
        PluginOption(
            "gamma_factors", tuple[float, ...], (0.3, 1.0, 3.0),
            "Multiples of 1 / n_features (scikit-learn's 'scale' gamma on standardized data) tried as gamma.",
            check=positive_numbers, search=Search(low=0.1, high=10.0, log=True),
        ),
    )

    def fit(self, train_features, train_labels, validation_features, validation_labels, *, seed, class_weight=None):
        # Lazy: scikit-learn takes seconds to import, and loading a fitted head needs only NumPy.
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score
        from sklearn.svm import SVC

        standardizer = Standardizer.fit(np.asarray(train_features, dtype=np.float64))
        x_train, x_val = standardizer(train_features), standardizer(validation_features)
        base_gamma = 1.0 / x_train.shape[1]
        best = None
        for c, factor in product(self.options["c_grid"], self.options["gamma_factors"]):
            svc = SVC(C=c, kernel="rbf", gamma=base_gamma * factor, class_weight=class_weight, random_state=seed)
            svc.fit(x_train, train_labels)
            score = f1_score(validation_labels, svc.predict(x_val), average="macro")
            if best is None or score > best[0]:
                best = (score, c, base_gamma * factor, svc)
        _, c, gamma, svc = best
        model = RbfSvmModel(
            standardizer,
            svc.support_vectors_.astype(np.float64),
            svc.dual_coef_[0].astype(np.float64),
            float(svc.intercept_[0]),
            float(gamma),
            1.0,
            0.0,
            c,
        )
        platt = LogisticRegression(C=1e6, max_iter=1000)
        platt.fit(model.decision_function(validation_features).reshape(-1, 1), validation_labels)
        model.platt_a, model.platt_b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        return model

    def load(self, directory: Path) -> RbfSvmModel:
        arrays, p = load_arrays(directory)
        return RbfSvmModel(
            Standardizer(arrays["mean"], arrays["scale"]),
            arrays["support_vectors"],
            arrays["dual_coef"],
            float(p["intercept"]),
            float(p["gamma"]),
            float(p["platt_a"]),
            float(p["platt_b"]),
            p["C"],
        )
