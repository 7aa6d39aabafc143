"""How a plugin package tests itself: the toolkit's conformance kit, on the installed entry points.

    pip install -e ./examples/review_toolkit_tfidf   (or without -e)
    pytest examples/review_toolkit_tfidf/tests
"""

from review_toolkit.testing import check_backbone, check_head, check_training


def test_tfidf_backbone_keeps_the_featurizer_contract():
    print(check_backbone("tfidf"))


def test_forest_head_keeps_the_fitted_head_contract():
    print(check_head("forest"))


def test_tfidf_and_forest_train_save_and_reload_together():
    report = check_training(backbone="tfidf", method="frozen", head="forest")
    recorded = {entry["name"]: entry["distribution"] for entry in report.details["info"]["plugins"]}
    assert recorded["tfidf"] == recorded["forest"] == "review-toolkit-tfidf"


def test_tfidf_with_the_toolkits_logreg_head():
    check_training(backbone="tfidf", method="frozen", head="logreg", min_f1=0.9)
