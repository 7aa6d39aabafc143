"""The conformance kit catches the mistakes plugin authors make, and passes the plugins that make none.

Each broken plugin below differs from a correct one by the one mistake it is named after;
it is registered under a throwaway distribution, so the kit sees it as users would.
"""

from __future__ import annotations

import textwrap

import pytest

from review_toolkit import registry
from review_toolkit.testing import PluginContractError, check_head, check_method, temporary_distribution

# A fitted head: class centroids, with a temperature fitted on the validation split.
CENTROID_HEAD = '''
import json
from pathlib import Path

import numpy as np
from review_toolkit.plugin_api import FittedHead, as_probabilities, load_arrays, save_arrays, sigmoid


class CentroidModel:
    def __init__(self, real, fake, temperature):
        self.real, self.fake, self.temperature = real, fake, temperature

    def predict_proba(self, features):
        x = np.asarray(features, dtype=np.float64)
        margin = ((x - self.real) ** 2).sum(axis=1) - ((x - self.fake) ** 2).sum(axis=1)
        return as_probabilities(sigmoid(margin / self.temperature))

    def save(self, directory):
        SAVE


class CentroidHead(FittedHead):
    description = "Nearest class centroid, temperature fitted on validation."
    run_files = RUN_FILES

    def fit(self, x, y, vx, vy, *, seed, class_weight=None):
        x, vx = np.asarray(x, dtype=np.float64), np.asarray(vx, dtype=np.float64)
        real, fake = x[y == 0].mean(axis=0), x[y == 1].mean(axis=0)
        best = None
        for temperature in np.geomspace(0.1, 100.0, 31):
            p = CentroidModel(real, fake, temperature).predict_proba(vx)[:, 1].clip(1e-12, 1 - 1e-12)
            loss = -np.mean(vy * np.log(p) + (1 - vy) * np.log(1 - p))
            if best is None or loss < best[0]:
                best = (loss, float(temperature))
        return CentroidModel(real, fake, best[1])

    def load(self, directory):
        LOAD
'''
GOOD_SAVE = 'save_arrays(directory, {"real": self.real, "fake": self.fake}, {"temperature": self.temperature})'
GOOD_LOAD = 'arrays, p = load_arrays(directory); return CentroidModel(arrays["real"], arrays["fake"], p["temperature"])'
ARRAY_FILES = '("head.safetensors", "head.json")'
CENTROID_VARIANTS = {
    "correct": (GOOD_SAVE, GOOD_LOAD),
    "float32-arrays": (
        'save_arrays(directory, {"real": self.real.astype(np.float32), "fake": self.fake.astype(np.float32)}, '
        '{"temperature": self.temperature})',
        GOOD_LOAD,
    ),
    "rounded-temperature": (
        'save_arrays(directory, {"real": self.real, "fake": self.fake}, {"temperature": round(self.temperature, 3)})',
        GOOD_LOAD,
    ),
    "npy-files": (
        'np.save(Path(directory) / "centroids.npy", np.stack([self.real, self.fake]), allow_pickle=False); '
        '(Path(directory) / "head.json").write_text(json.dumps({"temperature": self.temperature}))',
        'c = np.load(Path(directory) / "centroids.npy"); '
        'return CentroidModel(c[0], c[1], json.loads((Path(directory) / "head.json").read_text())["temperature"])',
        '("centroids.npy", "head.json")',  # declared, so only the format is wrong
    ),
    "writes-run-json": (
        GOOD_SAVE + '; (Path(directory) / "run.json").write_text("{}")',
        GOOD_LOAD,
    ),
}

# A method: BitFit, training only the encoder's biases.
BITFIT_METHOD = '''
from safetensors.torch import load_file, save_file
from review_toolkit.plugin_api import Method, enable_gradient_checkpointing


class BitFitMethod(Method):
    description = "BitFit: only the encoder's biases train."
    trains_backbone = True
    default_learning_rate = 1e-3

    def load_for_training(self, backbone, checkpoint, config):
        encoder = backbone.load_encoder(checkpoint)
        for name, parameter in encoder.named_parameters():
            parameter.requires_grad_(name.endswith(".bias") and UNUSED_FILTER)
        return CHECKPOINTING

    def save(self, encoder, directory):
        (directory / "method").mkdir(exist_ok=True)
        biases = {n: p.detach().contiguous() for n, p in encoder.named_parameters() if p.requires_grad}
        save_file(biases, str(directory / SAVED_AS))

    def load_trained(self, backbone, checkpoint, directory, config):
        encoder = backbone.load_encoder(checkpoint)
        encoder.load_state_dict(load_file(str(directory / SAVED_AS)), strict=False)
        return encoder.eval()
'''
BITFIT_CORRECT = {
    "UNUSED_FILTER": '".pooler." not in name',  # mean pooling never reads the checkpoint's pooler
    "CHECKPOINTING": "enable_gradient_checkpointing(encoder, config)",
    "SAVED_AS": '"method/biases.safetensors"',
}
BITFIT_VARIANTS = {
    "correct": {},
    "ignores-checkpointing": {"CHECKPOINTING": "encoder"},
    "pooler-bias-without-gradient": {"UNUSED_FILTER": "True"},
    "writes-head-file": {"SAVED_AS": '"head.safetensors"'},
}


def _module_name(tmp_path, stem: str) -> str:
    return f"{stem}_{tmp_path.name.replace('-', '_')}"


def _centroid_source(variant: str) -> str:
    save, load, *run_files = CENTROID_VARIANTS[variant]
    source = CENTROID_HEAD.replace("SAVE", save).replace("LOAD", load)
    return source.replace("RUN_FILES", run_files[0] if run_files else ARRAY_FILES)


def _bitfit_source(variant: str) -> str:
    source = BITFIT_METHOD
    for placeholder, code in {**BITFIT_CORRECT, **BITFIT_VARIANTS[variant]}.items():
        source = source.replace(placeholder, code)
    return source


def _check_centroid_head(tmp_path, variant: str):
    module = _module_name(tmp_path, "acme_centroid")
    with temporary_distribution(
        "acme-centroid", {"head": {"centroid": f"{module}:CentroidHead"}}, version="1.0.0",
        modules={module: _centroid_source(variant)}, directory=tmp_path / "site",
    ):
        return check_head("centroid")


def _check_bitfit(tmp_path, tiny_bert, variant: str):
    module = _module_name(tmp_path, "acme_bitfit")
    with temporary_distribution(
        "acme-bitfit", {"method": {"bitfit": f"{module}:BitFitMethod"}}, version="1.0.0",
        modules={module: _bitfit_source(variant)}, directory=tmp_path / "site",
    ):
        return check_method("bitfit", backbone="bert", model=tiny_bert)


@pytest.fixture(autouse=True)
def _fresh_registry():
    registry.refresh()
    yield
    registry.refresh()


def test_a_correct_fitted_head_passes_and_its_round_trip_runs_where_probabilities_are_uncertain(tmp_path):
    report = _check_centroid_head(tmp_path, "correct")
    assert any("round-trip bit-exactly" in step for step in report.passed)
    # Most of the 64 probes lie between 0.01 and 0.99, where float32 rounding cannot hide.
    assert report.details["round_trip_uncertain"] >= 32


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("float32-arrays", "load(save(model)) scores differently on overlapping classes"),
        ("rounded-temperature", "load(save(model)) scores differently on overlapping classes"),
        ("npy-files", "wrote centroids.npy: a plugin stores tensors as .safetensors"),
        ("writes-run-json", "wrote or changed run.json in the run directory, a name the toolkit reserves"),
    ],
)
def test_the_kit_fails_a_fitted_head_that(tmp_path, variant, expected):
    with pytest.raises(PluginContractError) as caught:
        _check_centroid_head(tmp_path, variant)
    message = str(caught.value)
    assert message.startswith("head plugin 'centroid' from distribution acme-centroid 1.0.0: "), message
    assert expected in message, message


def test_a_correct_bitfit_method_passes(tmp_path, tiny_bert):
    report = _check_bitfit(tmp_path, tiny_bert, "correct")
    assert any(step.startswith("honours gradient_checkpointing") for step in report.passed)
    assert any("every trainable parameter a gradient" in step for step in report.passed)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("ignores-checkpointing", "ignores gradient_checkpointing: with config.gradient_checkpointing set, no module"),
        ("pooler-bias-without-gradient", "get no gradient from the pooled output: transformer.pooler.dense.bias"),
        ("writes-head-file", "wrote or changed head.safetensors in the run directory, which is not among the names"),
    ],
)
def test_the_kit_fails_a_method_that(tmp_path, tiny_bert, variant, expected):
    with pytest.raises(PluginContractError) as caught:
        _check_bitfit(tmp_path, tiny_bert, variant)
    message = str(caught.value)
    assert message.startswith("method plugin 'bitfit' from distribution acme-bitfit 1.0.0: "), message
    assert expected in message, message


def test_a_method_declaring_a_reserved_name_is_refused_by_the_kit(tmp_path, tiny_bert):
    module = _module_name(tmp_path, "acme_greedy")
    source = _bitfit_source("correct") + textwrap.dedent('''
        class GreedyMethod(BitFitMethod):
            run_files = ("method", "config.yaml")
    ''')
    with temporary_distribution(
        "acme-greedy", {"method": {"greedy": f"{module}:GreedyMethod"}}, modules={module: source},
        directory=tmp_path / "site",
    ):
        with pytest.raises(PluginContractError, match=r"`run_files` declares \['config.yaml'\], names the toolkit reserves"):
            check_method("greedy", backbone="bert", model=tiny_bert)


def test_training_refuses_a_head_that_writes_a_reserved_file_and_leaves_no_run(tmp_path, tiny_bert):
    from review_toolkit.testing import check_training

    module = _module_name(tmp_path, "acme_centroid")
    with temporary_distribution(
        "acme-centroid", {"head": {"centroid": f"{module}:CentroidHead"}}, modules={module: _centroid_source("writes-run-json")},
        directory=tmp_path / "site",
    ):
        with pytest.raises(PluginContractError) as caught:
            check_training(backbone="bert", model=tiny_bert, head="centroid", work_dir=tmp_path / "work")
    assert "The head 'centroid' wrote or changed run.json in the run directory" in str(caught.value)
    assert not (tmp_path / "work" / "training" / "run").exists()
    assert not (tmp_path / "work" / "training" / "run.partial").exists()
