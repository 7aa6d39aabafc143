"""forest: a random forest on any embeddings, stored as plain arrays and scored with numpy.

scikit-learn would save a forest with pickle; here every tree's node arrays
(children, split feature, threshold, leaf P(fake)) are concatenated into one
safetensors file and traversed with numpy, so loading a run executes nothing.
The probabilities are exactly those of ``RandomForestClassifier.predict_proba``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score

from review_toolkit.plugin_api import FittedHead, PluginOption, as_probabilities, load_arrays, save_arrays

MIN_SAMPLES_LEAF_GRID = (1, 3)  # the validation split picks one
LEAF = -1


class ForestModel:
    def __init__(self, left: np.ndarray, right: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
                 leaf_p_fake: np.ndarray, roots: np.ndarray, min_samples_leaf: int):
        self.left, self.right, self.feature, self.threshold = left, right, feature, threshold
        self.leaf_p_fake, self.roots, self.min_samples_leaf = leaf_p_fake, roots, min_samples_leaf

    @classmethod
    def from_sklearn(cls, forest: RandomForestClassifier, min_samples_leaf: int) -> "ForestModel":
        fake_column = int(np.flatnonzero(forest.classes_ == 1)[0])
        left, right, feature, threshold, leaf_p_fake, roots = [], [], [], [], [], []
        offset = 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            is_leaf = tree.children_left == LEAF
            roots.append(offset)
            left.append(np.where(is_leaf, LEAF, tree.children_left + offset))
            right.append(np.where(is_leaf, LEAF, tree.children_right + offset))
            feature.append(np.where(is_leaf, 0, tree.feature))
            threshold.append(tree.threshold)
            counts = tree.value[:, 0, :]
            leaf_p_fake.append(counts[:, fake_column] / counts.sum(axis=1))
            offset += tree.node_count
        join = np.concatenate
        return cls(
            join(left).astype(np.int64), join(right).astype(np.int64), join(feature).astype(np.int64),
            join(threshold).astype(np.float64), join(leaf_p_fake).astype(np.float64),
            np.asarray(roots, dtype=np.int64), min_samples_leaf,
        )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        # scikit-learn compares float32 features with float64 thresholds; so does this.
        x = np.asarray(features, dtype=np.float32)
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], self.roots.size)).copy()
        while True:
            inner = self.left[node] != LEAF
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return as_probabilities(self.leaf_p_fake[node].mean(axis=1))

    def save(self, directory: Path) -> None:
        save_arrays(
            directory,
            {"left": self.left, "right": self.right, "feature": self.feature, "threshold": self.threshold,
             "leaf_p_fake": self.leaf_p_fake, "roots": self.roots},
            {"type": "random_forest", "trees": int(self.roots.size), "min_samples_leaf": self.min_samples_leaf},
        )


class ForestHead(FittedHead):
    description = "Random forest on any embeddings; leaf size chosen on validation; stored as arrays."
    declared_options = (
        PluginOption("n_estimators", int, 200, "Trees in the forest.", minimum=1),
        PluginOption("max_depth", int, None, "Deepest split of a tree (not set: grown until the leaves are pure).", minimum=1),
    )

    def fit(self, train_features, train_labels, validation_features, validation_labels, *, seed, class_weight=None):
        best = None
        for min_samples_leaf in MIN_SAMPLES_LEAF_GRID:
            forest = RandomForestClassifier(
                n_estimators=self.options["n_estimators"], max_depth=self.options["max_depth"],
                min_samples_leaf=min_samples_leaf, max_features="sqrt",
                class_weight=class_weight, random_state=seed, n_jobs=-1,
            )
            forest.fit(np.asarray(train_features, dtype=np.float32), train_labels)
            score = f1_score(validation_labels, forest.predict(np.asarray(validation_features, dtype=np.float32)),
                             average="macro")
            if best is None or score > best[0]:
                best = (score, min_samples_leaf, forest)
        _, min_samples_leaf, forest = best
        return ForestModel.from_sklearn(forest, min_samples_leaf)

    def load(self, directory: Path) -> ForestModel:
        arrays, parameters = load_arrays(directory)
        return ForestModel(
            arrays["left"], arrays["right"], arrays["feature"], arrays["threshold"], arrays["leaf_p_fake"],
            arrays["roots"], int(parameters["min_samples_leaf"]),
        )
