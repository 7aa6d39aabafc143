"""Third-party plugins end to end, the featurizer path, and the conformance kit (review_toolkit.testing).

The example package ``examples/review_toolkit_tfidf`` is pip-installed, offline and without
build isolation, into a throwaway folder (``pip install --target``): the environment running the
tests is never changed, whether it is a virtual environment or not. The CLI runs with this
interpreter and that folder first on ``PYTHONPATH``; library calls run here, with the folder put on
``sys.path`` for the duration of a test.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from review_toolkit import registry
from review_toolkit.cli import cli
from review_toolkit.config import TrainConfig
from review_toolkit.errors import PluginError
from review_toolkit.testing import (
    PluginContractError,
    check_backbone,
    check_head,
    check_method,
    check_training,
    temporary_distribution,
    tiny_reviews,
    write_tiny_dataset,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "review_toolkit_tfidf"
DISTRIBUTION = "review-toolkit-tfidf"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.BLOCK_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setenv("REVIEW_TOOLKIT_CACHE", str(tmp_path / "cache"))
    registry.refresh()
    yield
    registry.refresh()


@pytest.fixture(scope="session")
def example_install(tmp_path_factory) -> SimpleNamespace:
    """The example package pip-installed into a folder of its own, seen through PYTHONPATH."""
    root = tmp_path_factory.mktemp("example_install")
    source = root / "review_toolkit_tfidf"  # a copy: an in-tree build would leave build/ and *.egg-info behind
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    site_packages = root / "site-packages"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(site_packages), str(source)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, f"pip install of the example failed:\n{install.stdout}\n{install.stderr}"
    assert (site_packages / "review_toolkit_tfidf").is_dir()
    return SimpleNamespace(python=sys.executable, site_packages=str(site_packages))


@pytest.fixture
def tfidf_installed(example_install):
    """The example's install folder on sys.path, so this process sees the example as installed."""
    sys.path.insert(0, example_install.site_packages)
    importlib.invalidate_caches()
    registry.refresh()
    yield example_install
    sys.path.remove(example_install.site_packages)
    for module in [name for name in sys.modules if name.startswith("review_toolkit_tfidf")]:
        del sys.modules[module]
    importlib.invalidate_caches()
    registry.refresh()


def run_cli(install: SimpleNamespace, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != registry.BLOCK_ENVIRONMENT_VARIABLE}
    env["REVIEW_TOOLKIT_CACHE"] = str(cwd / "cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [install.site_packages, env.get("PYTHONPATH")]))
    return subprocess.run(
        [install.python, "-m", "review_toolkit", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


# --------------------------------------------------------------------------- the example package


def test_installed_example_is_listed_by_the_cli(example_install, tmp_path):
    result = run_cli(example_install, "plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:2]): line for line in result.stdout.splitlines() if line.strip()}
    for kind, name, words in [("backbone", "tfidf", "TF-IDF"), ("head", "forest", "Random forest")]:
        row = rows[(kind, name)]
        assert f"{DISTRIBUTION}  0.1.0" in row and words in row and "BROKEN" not in row
    assert "review_toolkit" in rows[("head", "logreg")]  # built-ins still listed beside it


def test_cli_trains_tfidf_logreg_on_the_bundled_data_and_the_run_reloads(tfidf_installed, tmp_path):
    from review_toolkit.data import load_splits
    from review_toolkit.evaluation.metrics import classification_metrics
    from review_toolkit.runs.loader import load_run

    result = run_cli(
        tfidf_installed, "train", "--backbone", "tfidf", "--method", "frozen", "--head", "logreg",
        "--output-dir", "run", "--quiet", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tfidf + frozen + logreg" in result.stdout
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["f1_macro"] >= 0.85  # measured 0.91 on the 200 test reviews of the bundled sample
    info = json.loads((run / "run.json").read_text())
    plugins = {entry["kind"]: entry for entry in info["plugins"]}
    assert plugins["backbone"] == {
        "kind": "backbone", "name": "tfidf", "distribution": DISTRIBUTION, "version": "0.1.0",
        "entry_point": "review_toolkit_tfidf.tfidf:TfidfBackbone",
    }
    assert plugins["method"]["distribution"] == plugins["head"]["distribution"] == "review_toolkit"
    assert sorted(p.name for p in (run / "featurizer").iterdir()) == ["tfidf.json", "tfidf.safetensors"]
    assert not (run / "tokenizer").exists()

    # The run reloads in this process and scores the test split exactly as the training process measured.
    classifier = load_run(run)
    test = load_splits(None, seed=42).test
    p_fake = classifier.predict_proba(test.text.tolist())
    again = classification_metrics(test.label.to_numpy(), (p_fake >= classifier.threshold).astype(int), p_fake)
    assert again["f1_macro"] == pytest.approx(metrics["f1_macro"], abs=1e-12)


def test_library_trains_tfidf_and_the_vocabulary_never_sees_test_texts(tfidf_installed, tmp_path):
    from review_toolkit import load_run, train

    train_file = write_tiny_dataset(tmp_path / "train.csv", n_per_class=40)
    with open(train_file, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([[f"The quokka lamp {i} flickers.", "real"] for i in range(4)])
    test_file = tmp_path / "test.csv"
    texts, labels = tiny_reviews(10, seed=3)
    with open(test_file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([(f"{text} zyzzyva", label) for text, label in zip(texts, labels)])

    result = train(
        TrainConfig(backbone="tfidf", method="frozen", head="logreg", data=str(train_file), test_data=str(test_file),
                    output_dir=str(tmp_path / "run")),
        progress=False,
    )
    assert result.metrics["f1_macro"] > 0.9
    assert result.info["embedding_size"] == result.classifier.embedding_size > 100
    word_terms = json.loads((result.run_dir / "featurizer" / "tfidf.json").read_text())["parts"][0]["terms"]
    assert "quokka" in word_terms  # fitted on train ...
    assert not [term for term in word_terms if "zyzzyva" in term]  # ... and on train only

    reloaded = load_run(result.run_dir)
    probe = ["Absolutely amazing product ever! Five stars!", "The hinge cracked near the screw, so I returned it."]
    assert np.array_equal(reloaded.predict_proba(probe), result.classifier.predict_proba(probe))
    assert [p.label for p in reloaded.predict(probe)] == ["fake", "real"]


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_featurizer_backbone_is_refused_for_training_methods_before_anything_loads(
    tfidf_installed, tmp_path, monkeypatch, method
):
    tfidf = importlib.import_module("review_toolkit_tfidf.tfidf")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the featurizer was fitted before the composition was checked")

    monkeypatch.setattr(tfidf.TfidfBackbone, "fit_featurizer", must_not_run)
    result = CliRunner().invoke(
        cli, ["train", "--backbone", "tfidf", "--method", method, "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1, result.output
    assert f"The 'tfidf' backbone is a featurizer fitted on the training texts: it has no trainable encoder for the {method!r} method" in result.output
    assert "Use --method frozen with it" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_tfidf_refuses_a_checkpoint(tfidf_installed, tmp_path):
    result = CliRunner().invoke(
        cli, ["train", "--backbone", "tfidf", "--model", "bert-base-uncased", "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "loads no checkpoint; drop --model bert-base-uncased" in result.output


def test_example_plugins_pass_the_conformance_kit(tfidf_installed):
    backbone = check_backbone("tfidf")
    assert backbone.source.distribution == DISTRIBUTION and len(backbone.passed) >= 6
    head = check_head("forest")
    assert head.source.distribution == DISTRIBUTION
    trained = check_training(backbone="tfidf", method="frozen", head="forest")
    recorded = {entry["name"]: entry["distribution"] for entry in trained.details["info"]["plugins"]}
    assert recorded == {"tfidf": DISTRIBUTION, "frozen": "review_toolkit", "forest": DISTRIBUTION}


def test_forest_scores_exactly_as_scikit_learn(tfidf_installed):
    from sklearn.ensemble import RandomForestClassifier

    forest_module = importlib.import_module("review_toolkit_tfidf.forest")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    model = forest_module.ForestModel.from_sklearn(forest, 1)
    np.testing.assert_allclose(model.predict_proba(x[:40]), forest.predict_proba(x[:40]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- the built-in plugins, through the kit


@pytest.mark.parametrize("name", ["logreg", "svm", "linear", "mlp"])
def test_builtin_heads_pass_the_conformance_kit(name):
    report = check_head(name)
    assert report.source.distribution == "review_toolkit"
    assert any("round-trip" in step for step in report.passed)


def test_builtin_minilm_backbone_passes_the_conformance_kit():
    report = check_backbone("minilm")
    assert any("lora_target" in step for step in report.passed)


def test_builtin_bert_backbone_passes_the_conformance_kit_with_a_local_model(tiny_bert):
    assert tiny_bert in str(check_backbone("bert", model=tiny_bert))


def test_builtin_frozen_method_passes_the_conformance_kit():
    check_method("frozen", backbone="minilm")


@pytest.mark.parametrize("name", ["full", "lora", "qlora"])
def test_builtin_training_methods_pass_the_conformance_kit(name, tiny_bert):
    # tiny_bert (tests/conftest.py): a random 2-layer BERT, so the save/reload round trip takes a second.
    report = check_method(name, backbone="bert", model=tiny_bert)
    assert any("reproduce the trained encoder" in step for step in report.passed)
    # The method's duties, each a check that fails a broken method (tests/unit/testing/test_kit_catches.py).
    assert any(step.startswith("honours gradient_checkpointing") for step in report.passed)
    assert any("every trainable parameter a gradient" in step for step in report.passed)
    assert any(step.startswith("save() writes only under its run_files") for step in report.passed)


def test_transformer_path_still_round_trips(tmp_path):
    report = check_training(backbone="minilm", method="frozen", head="logreg", work_dir=tmp_path)
    run = Path(report.details["run_dir"])
    assert (run / "tokenizer").is_dir() and not (run / "featurizer").exists()


# --------------------------------------------------------------------------- the kit catches broken plugins

_SLOPPY_HEAD = '''
import json
from pathlib import Path

import numpy as np
from review_toolkit.plugin_api.contracts import FittedHead


class Model:
    def __init__(self, w):
        self.w = np.asarray(w, dtype=np.float64)

    def predict_proba(self, x):
        p = 1 / (1 + np.exp(-(np.asarray(x, dtype=np.float64) @ self.w)))
        return {output}

    def save(self, directory):
        {save}


class SloppyHead(FittedHead):
    description = "Least squares direction, saved carelessly."
    run_files = ("w.json", "w.pkl")

    def fit(self, x, y, vx, vy, *, seed, class_weight=None):
        w, *_ = np.linalg.lstsq(np.asarray(x, dtype=np.float64), 2.0 * np.asarray(y) - 1.0, rcond=None)
        return Model(w)

    def load(self, directory):
        return Model(json.loads((Path(directory) / "w.json").read_text()))
'''
_GOOD_OUTPUT = "np.stack([1 - p, p], axis=1)"
_GOOD_SAVE = '(Path(directory) / "w.json").write_text(json.dumps(self.w.tolist()))'


@pytest.mark.parametrize(
    ("output", "save", "expected"),
    [
        (_GOOD_OUTPUT, '(Path(directory) / "w.json").write_text(json.dumps(self.w.astype("float32").tolist()))',
         "load(save(model)) scores differently"),
        ("np.stack([-p, p], axis=1)", _GOOD_SAVE, "must return probabilities in [0, 1]"),
        ("p", _GOOD_SAVE, "must return [n, 2] probabilities"),
        (_GOOD_OUTPUT, 'import pickle; pickle.dump(self.w, open(Path(directory) / "w.pkl", "wb")); '
         '(Path(directory) / "w.json").write_text(json.dumps(self.w.tolist()))', "wrote pickle files (w.pkl)"),
    ],
    ids=["lossy-save", "not-probabilities", "wrong-shape", "pickle"],
)
def test_the_kit_names_the_distribution_and_the_broken_step(tmp_path, output, save, expected):
    module = "acme_sloppy_" + tmp_path.name.replace("-", "_")
    source = _SLOPPY_HEAD.format(output=output, save=save)
    with temporary_distribution(
        "acme-sloppy", {"head": {"sloppy": f"{module}:SloppyHead"}}, version="0.1.0", modules={module: source},
        directory=tmp_path / "site",
    ):
        with pytest.raises(PluginContractError) as caught:
            check_head("sloppy")
    message = str(caught.value)
    assert message.startswith("head plugin 'sloppy' from distribution acme-sloppy 0.1.0: ")
    assert expected in message


def test_the_kit_passes_a_correct_third_party_head_and_reports_unknown_names(tmp_path):
    module = "acme_tidy_" + tmp_path.name.replace("-", "_")
    source = _SLOPPY_HEAD.format(output=_GOOD_OUTPUT, save=_GOOD_SAVE)
    with temporary_distribution(
        "acme-tidy", {"head": {"tidy": f"{module}:SloppyHead"}}, modules={module: source}, directory=tmp_path
    ):
        assert check_head("tidy").source.distribution == "acme-tidy"
    with pytest.raises(PluginContractError, match="head plugin 'tidy' cannot be loaded: Unknown head 'tidy'"):
        check_head("tidy")


_UNREGISTERED_WEIGHT_HEAD = '''
import torch
from torch import nn
from review_toolkit.plugin_api.contracts import TorchHead


class Scaled(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.scale = torch.rand(1) + 0.5  # a plain tensor: not in state_dict, so not saved

    def forward(self, x):
        return self.linear(x) * self.scale


class LeakyHead(TorchHead):
    description = "Forgets part of its state."

    def build(self, in_features, num_labels):
        return Scaled(nn.Linear(in_features, num_labels))
'''

_NARROW_FEATURIZER = '''
import json
from pathlib import Path

import numpy as np
from review_toolkit.plugin_api.contracts import FeaturizerBackbone


class Lengths:
    embedding_size = 3

    def transform(self, texts):
        return np.array([[len(t), t.count(" ")] for t in texts], dtype=np.float32)  # 2 columns, not 3

    def save(self, directory):
        (Path(directory) / "lengths.json").write_text("{}")


class LengthBackbone(FeaturizerBackbone):
    description = "Text length features."

    def fit_featurizer(self, texts, *, checkpoint, seed=None):
        return Lengths()

    def load_featurizer(self, directory, *, checkpoint):
        return Lengths()
'''


def test_the_kit_catches_a_torch_head_whose_state_is_not_saved(tmp_path):
    module = "acme_leaky_" + tmp_path.name.replace("-", "_")
    with temporary_distribution(
        "acme-leaky", {"head": {"leaky": f"{module}:LeakyHead"}}, modules={module: _UNREGISTERED_WEIGHT_HEAD},
        directory=tmp_path,
    ):
        with pytest.raises(PluginContractError, match="acme-leaky 0.0.0: build\\(\\) \\+ load_state_dict"):
            check_head("leaky")


def test_the_kit_catches_a_featurizer_with_the_wrong_width(tmp_path):
    module = "acme_lengths_" + tmp_path.name.replace("-", "_")
    with temporary_distribution(
        "acme-lengths", {"backbone": {"lengths": f"{module}:LengthBackbone"}}, modules={module: _NARROW_FEATURIZER},
        directory=tmp_path,
    ):
        with pytest.raises(PluginContractError) as caught:
            check_backbone("lengths")
        assert "backbone plugin 'lengths' from distribution acme-lengths" in str(caught.value)
        assert "returned shape (12, 2) for 12 texts; the contract is [12, embedding_size=3]" in str(caught.value)
        # The composer refuses a training method for it by name, before fitting anything.
        from review_toolkit.train.pipeline import Composition

        with pytest.raises(PluginError, match="no trainable encoder for the 'lora' method"):
            Composition.resolve(TrainConfig(backbone="lengths", method="lora"))
