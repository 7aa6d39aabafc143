"""How a plugin package tests itself: the toolkit's conformance kit, on the installed entry points.

    pip install -e ./examples/review_toolkit_tfidf   (or without -e)
    pytest examples/review_toolkit_tfidf/tests
"""

import json

import numpy as np
import pytest

from review_toolkit import registry
from review_toolkit.errors import ConfigError
from review_toolkit.testing import check_backbone, check_head, check_training


def test_tfidf_backbone_keeps_the_featurizer_contract():
    print(check_backbone("tfidf"))
    print(check_backbone("tfidf", options={"max_features": 50, "word_ngrams": (1, 1), "char_ngrams": (2, 3)}))


def test_forest_head_keeps_the_fitted_head_contract():
    print(check_head("forest", options={"n_estimators": 25}))


def test_tfidf_and_forest_train_save_and_reload_together():
    report = check_training(backbone="tfidf", method="frozen", head="forest", head_options={"n_estimators": 25})
    recorded = {entry["name"]: entry["distribution"] for entry in report.details["info"]["plugins"]}
    assert recorded["tfidf"] == recorded["forest"] == "review-toolkit-tfidf"
    options = report.details["info"]["plugin_options"]
    assert options["head"] == {"n_estimators": 25, "max_depth": None}
    assert options["backbone"]["word_ngrams"] == [1, 2]


def test_tfidf_with_the_toolkits_logreg_head():
    check_training(backbone="tfidf", method="frozen", head="logreg", min_f1=0.9)


def test_the_options_shape_what_is_fitted(tmp_path):
    texts = ["the kettle boils fast", "the lid cracked", "great kettle great price", "lid broke in a week"] * 20
    featurizer = registry.create("backbone", "tfidf", max_features=7, char_ngrams="3,3").fit_featurizer(texts, checkpoint="")
    assert featurizer.embedding_size == 14  # seven word terms and seven character trigrams
    featurizer.save(tmp_path)
    parts = json.loads((tmp_path / "tfidf.json").read_text())["parts"]
    assert [part["params"]["ngram_range"] for part in parts] == [[1, 2], [3, 3]]  # stored with the vocabulary

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 2
    model = registry.create("head", "forest", n_estimators=7).fit(x, y, x, y, seed=0)
    assert model.roots.size == 7
    with pytest.raises(ConfigError, match="option 'char_ngrams' must be two sizes LOW,HIGH"):
        registry.create("backbone", "tfidf", char_ngrams="4,2")
