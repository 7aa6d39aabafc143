"""Conformance checks for plugins: does a backbone, method or head keep its contract?

For plugin authors and for the toolkit's own tests. Each check looks the
plugin up through the registry (so it tests what users get: the installed
entry point, not a class imported by hand), checks what the plugin declares,
makes it work on a tiny dataset, and round-trips what it saves. Every check is
a plain function: call it inside a pytest test. It returns a
``ConformanceReport`` listing what passed, and raises ``PluginContractError``
(an ``AssertionError``) whose message names the plugin, its distribution and
version, the step that failed and what to fix::

    from review_toolkit.testing import check_backbone, check_head, check_method, check_training

    def test_forest_head():
        check_head("forest")

    def test_tfidf_backbone():
        check_backbone("tfidf")

    def test_lora_on_minilm():
        check_method("lora", backbone="minilm")

    def test_end_to_end():
        check_training(backbone="tfidf", method="frozen", head="forest")

The checks need no network: the data is generated, and encoder backbones load
the checkpoint given as ``model=`` (or their default, which must then be
available offline). ``options=`` sets the plugin's declared options, as
``--head-option NAME=VALUE`` would; ``registry.create(kind, name, **options)``
gives a plugin instance for tests of one's own.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import math
import random
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from review_toolkit import registry
from review_toolkit.errors import PluginError
from review_toolkit.plugin_api.contracts import (
    Backbone,
    Featurizer,
    FeaturizerBackbone,
    FittedHead,
    FittedModel,
    Head,
    Method,
    TorchHead,
)
from review_toolkit.plugin_api.options import PluginOption
from review_toolkit.registry import PluginSource
from review_toolkit.runs.layout import (
    PLUGIN_FILE_SUFFIXES,
    RESERVED_NAMES,
    check_plugin_writes,
    snapshot,
)

#: How far ``load_run`` may move a compiled run's probabilities. The trained classifier scores
#: through compiled kernels, the reloaded one eagerly: the compiler fuses and reorders float32
#: operations, each rounding at 2**-24 relative, and across the layers the differences add up to
#: a few multiples of that. A weight that was not saved moves probabilities by orders of
#: magnitude more, so this bound still catches it.
COMPILED_TOLERANCE = 1e-5

__all__ = [
    "PluginContractError",
    "ConformanceReport",
    "check_plugin",
    "check_backbone",
    "check_method",
    "check_head",
    "check_training",
    "tiny_reviews",
    "write_tiny_dataset",
    "temporary_distribution",
]


class PluginContractError(AssertionError):
    """A plugin broke its contract; the message names the plugin, its distribution and the failed step."""


@dataclass
class ConformanceReport:
    """What a check verified, step by step: returned when every step passed."""

    kind: str
    name: str
    source: PluginSource | None
    passed: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        origin = f" from {self.source.distribution} {self.source.version}" if self.source else ""
        lines = [f"{self.kind} {self.name!r}{origin}: {len(self.passed)} checks passed"]
        lines += [f"  ok  {step}" for step in self.passed]
        return "\n".join(lines)


class _Checker:
    """Collects passed steps; turns any failure into a PluginContractError that names the plugin."""

    def __init__(self, kind: str, name: str):
        self.report = ConformanceReport(kind=kind, name=name, source=None)

    @property
    def where(self) -> str:
        source = self.report.source
        if self.report.kind == "composition":
            return f"composition {self.report.name}"
        origin = f" from distribution {source.distribution} {source.version}" if source else ""
        return f"{self.report.kind} plugin {self.report.name!r}{origin}"

    def fail(self, message: str) -> None:
        raise PluginContractError(f"{self.where}: {message}")

    def require(self, condition: Any, message: str) -> None:
        if not condition:
            self.fail(message)

    def ok(self, step: str) -> None:
        self.report.passed.append(step)

    @contextlib.contextmanager
    def step(self, doing: str) -> Iterator[None]:
        """Run plugin code; an exception it raises becomes a contract error saying during what."""
        try:
            yield
        except PluginContractError:
            raise
        except Exception as error:  # plugin code may raise anything; report it against the plugin
            raise PluginContractError(f"{self.where}: {doing} raised {type(error).__name__}: {error}") from error

    def lookup(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
        try:
            plugin, source = registry.get(kind, name)
        except PluginError as error:  # unknown, blocked, broken import, or contract violated at load time
            raise PluginContractError(f"{kind} plugin {name!r} cannot be loaded: {error}") from error
        self.report.source = source
        self.report.name = plugin.name or name
        self.ok(f"loads through the {registry.GROUPS[kind]} entry point ({source.entry_point})")
        self.check_declared_options(plugin, kind, options)
        return plugin

    def check_declared_options(self, plugin: Any, kind: str, options: dict[str, Any] | None) -> None:
        declared = plugin.declared_options
        self.require(
            isinstance(declared, tuple) and all(isinstance(option, PluginOption) for option in declared),
            "`declared_options` must be a tuple of review_toolkit.plugin_api.PluginOption.",
        )
        names = [option.name for option in declared]
        self.require(len(set(names)) == len(names), f"`declared_options` names an option twice: {names}.")
        with self.step("checking every option's default against its own declaration"):
            for option in declared:
                option.convert(option.default, where=f"{kind} {plugin.name!r}")
        with self.step(f"setting options {options or {}}"):
            plugin.set_options(options, kind=kind)
        if declared:
            self.ok(f"declares options {', '.join(names)}; their defaults pass their own checks")

    def check_run_files(self, plugin: Any) -> tuple[str, ...]:
        run_files = plugin.run_files
        self.require(
            isinstance(run_files, tuple) and all(isinstance(name, str) and name and "/" not in name for name in run_files),
            f"`run_files` must be a tuple of top-level file or folder names; got {run_files!r}.",
        )
        reserved = sorted(set(run_files) & RESERVED_NAMES)
        self.require(not reserved, f"`run_files` declares {reserved}, names the toolkit reserves for its own files.")
        return run_files

    def writes_only_declared(self, directory: Path, before: dict, allowed: tuple[str, ...], what: str) -> None:
        try:
            check_plugin_writes(directory, before, plugin=f"{self.report.kind} {self.report.name!r}", allowed=allowed)
        except PluginError as error:
            self.fail(f"{what}: {error}")
        self.ok(f"{what} writes only under its run_files ({', '.join(allowed) or 'none'})")

    def safe_formats(self, directory: Path, names: tuple[str, ...] | None, what: str) -> list[str]:
        """No pickle, and only the formats the guide allows, among the files under ``names`` (all when None)."""
        from review_toolkit.runs.manifest import looks_like_pickle

        directory = Path(directory)
        files = sorted(
            p for p in directory.rglob("*")
            if p.is_file() and (names is None or p.relative_to(directory).parts[0] in names)
        )
        self.require(files, f"{what} wrote no file into {directory}.")
        listed = [p.relative_to(directory).as_posix() for p in files]
        pickles = [name for p, name in zip(files, listed) if looks_like_pickle(p)]
        self.require(
            not pickles,
            f"{what} wrote pickle files ({', '.join(pickles)}); run artifacts must be safetensors, JSON or text, "
            "because loading a pickle can run arbitrary code.",
        )
        other = [name for p, name in zip(files, listed) if p.suffix.lower() not in PLUGIN_FILE_SUFFIXES]
        self.require(
            not other,
            f"{what} wrote {', '.join(other)}: a plugin stores tensors as .safetensors and everything else as "
            f"JSON, YAML or text ({', '.join(sorted(PLUGIN_FILE_SUFFIXES))}); numpy's .npy/.npz and other "
            "formats are refused.",
        )
        return listed

    def check_description(self, plugin: Any) -> None:
        description = getattr(plugin, "description", "")
        self.require(
            isinstance(description, str) and description.strip() and "\n" not in description,
            f"`description` must be one non-empty line (shown by 'review-toolkit plugins'); got {description!r}.",
        )
        self.ok("declares a one-line description")

    def no_pickles(self, directory: Path, what: str, skip: tuple[str, ...] = ()) -> list[str]:
        from review_toolkit.runs.manifest import looks_like_pickle

        files = sorted(
            p for p in Path(directory).rglob("*") if p.is_file() and p.relative_to(directory).parts[0] not in skip
        )
        self.require(files, f"{what} wrote no file into {directory}.")
        pickles = [str(p.relative_to(directory)) for p in files if looks_like_pickle(p)]
        self.require(
            not pickles,
            f"{what} wrote pickle files ({', '.join(pickles)}); run artifacts must be safetensors, JSON or text, "
            "because loading a pickle can run arbitrary code.",
        )
        names = [str(p.relative_to(directory)) for p in files]
        self.ok(f"{what} writes only safe files ({', '.join(names)})")
        return names


# --------------------------------------------------------------------------- tiny data

_FAKE_OPENINGS = ["This is the best", "Absolutely amazing", "I love this", "Highly recommend this", "Perfect"]
_FAKE_MIDDLES = ["product ever", "item for everyone", "purchase of my life", "thing I have ever bought", "buy"]
_FAKE_ENDINGS = ["Five stars!", "Must buy!", "You will love it!", "Best ever!", "Great great great!"]
_REAL_OPENINGS = ["The hinge", "After two weeks the strap", "My kettle's lid", "The left earbud", "Shipping box"]
_REAL_MIDDLES = ["cracked near the screw", "started rattling at 40 mph", "leaks when half full", "lost charge overnight"]
_REAL_ENDINGS = ["so I returned it.", "support replaced it in a week.", "fixed it with glue.", "otherwise fine for $12."]


def tiny_reviews(n_per_class: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    """Synthetic, easily separable reviews and their labels (``fake`` / ``real``), interleaved."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n_per_class):
        fake = f"{rng.choice(_FAKE_OPENINGS)} {rng.choice(_FAKE_MIDDLES)}. {rng.choice(_FAKE_ENDINGS)} #{i}"
        real = f"{rng.choice(_REAL_OPENINGS)} {rng.choice(_REAL_MIDDLES)}, {rng.choice(_REAL_ENDINGS)} (order {i})"
        texts += [fake, real]
        labels += ["fake", "real"]
    return texts, labels


def write_tiny_dataset(path: str | Path, n_per_class: int = 60, seed: int = 0) -> Path:
    """A CSV (``text,label``) of ``tiny_reviews``: enough rows for the toolkit's train/validation/test split."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    texts, labels = tiny_reviews(n_per_class, seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


def _blobs(
    n: int, size: int, rng: np.random.Generator, fake_fraction: float = 0.5, separation: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs as the toolkit hands them to a head: float32 vectors, int64 labels (0 real, 1 fake).

    The default separation leaves a wide margin; a small one makes the classes overlap, so
    that a head's probabilities stay away from 0 and 1 and every digit of what it saved counts.
    """
    labels = (rng.random(n) < fake_fraction).astype(np.int64)
    labels[:2] = [0, 1]  # both classes, always
    centres = np.where(labels[:, None] == 1, separation, -separation) * (np.arange(size) < max(1, size // 2))
    return (centres + rng.normal(size=(n, size))).astype(np.float32), labels


@contextlib.contextmanager
def _directory(parent: str | Path | None, name: str) -> Iterator[Path]:
    if parent is not None:
        path = Path(parent) / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"review_toolkit_check_{name}_") as tmp:
        yield Path(tmp)


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))) if a.size else 0.0


# --------------------------------------------------------------------------- heads


def check_head(
    name: str,
    *,
    options: dict[str, Any] | None = None,
    embedding_size: int = 8,
    seed: int = 0,
    work_dir: str | Path | None = None,
) -> ConformanceReport:
    """Declarations, learning a separable problem, probabilities, and a bit-exact save/load round trip.

    The round trip of a fitted head runs on overlapping classes, where probabilities are far
    from 0 and 1: a parameter saved in float32 or rounded shows there.
    """
    check = _Checker("head", name)
    head: Head = check.lookup("head", name, options)
    check.check_description(head)
    is_torch, is_fitted = isinstance(head, TorchHead), isinstance(head, FittedHead)
    check.require(is_torch or is_fitted, "must subclass review_toolkit.plugin_api.contracts.TorchHead or FittedHead.")
    check.require(
        head.trains_with_trainer is is_torch,
        f"`trains_with_trainer` is {head.trains_with_trainer!r} but the class is a "
        f"{'TorchHead' if is_torch else 'FittedHead'}; leave the attribute to the base class.",
    )
    check.ok(f"is a {'TorchHead (trained by Trainer)' if is_torch else 'FittedHead (fitted on frozen vectors)'}")
    rng = np.random.default_rng(seed)
    train_x, train_y = _blobs(96, embedding_size, rng)
    val_x, val_y = _blobs(32, embedding_size, rng)
    test_x, test_y = _blobs(64, embedding_size, rng)
    with _directory(work_dir, "head") as directory:
        if is_fitted:
            _check_fitted_head(check, head, (train_x, train_y, val_x, val_y, test_x, test_y), seed, directory, rng)
        else:
            _check_torch_head(check, head, (train_x, train_y, test_x, test_y), seed, directory)
    return check.report


def _check_probabilities(check: _Checker, probabilities: Any, n: int, what: str) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    check.require(
        probabilities.shape == (n, 2),
        f"{what} must return [n, 2] probabilities (column 1 = fake); got shape {probabilities.shape} for n={n}.",
    )
    check.require(np.all(np.isfinite(probabilities)), f"{what} returned NaN or infinite values.")
    check.require(
        probabilities.min() >= 0 and probabilities.max() <= 1 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-6),
        f"{what} must return probabilities in [0, 1] whose rows sum to 1 (not logits or scores).",
    )
    return probabilities


def _check_fitted_head(check, head, data, seed, directory, rng) -> None:
    from review_toolkit.runs.manifest import refuse_unpickling

    train_x, train_y, val_x, val_y, test_x, test_y = data
    run_files = check.check_run_files(head)
    with check.step("fit() on a tiny separable dataset"):
        model = head.fit(train_x, train_y, val_x, val_y, seed=seed, class_weight=None)
    check.require(
        isinstance(model, FittedModel),
        f"fit() must return an object with predict_proba(features) and save(directory); got {type(model).__name__}.",
    )
    with check.step("predict_proba()"):
        probabilities = _check_probabilities(check, model.predict_proba(test_x), len(test_x), "predict_proba()")
    accuracy = float(np.mean((probabilities[:, 1] >= 0.5) == test_y))
    check.require(accuracy >= 0.8, f"learns a separable toy problem to only {accuracy:.0%} accuracy (want >= 80%).")
    check.ok(f"fits and predicts probabilities ({accuracy:.0%} accuracy on a separable toy problem)")
    imbalanced_x, imbalanced_y = _blobs(96, train_x.shape[1], rng, fake_fraction=0.2)
    with check.step("fit(class_weight='balanced') on imbalanced data"):
        head.fit(imbalanced_x, imbalanced_y, val_x, val_y, seed=seed, class_weight="balanced")
    check.ok("accepts class_weight='balanced'")

    size = train_x.shape[1]
    overlapping = [_blobs(n, size, rng, separation=0.35) for n in (96, 64, 64)]
    (fit_x, fit_y), (fit_val_x, fit_val_y), (probe_x, _) = overlapping
    with check.step("fit() on overlapping classes"):
        model = head.fit(fit_x, fit_y, fit_val_x, fit_val_y, seed=seed, class_weight=None)
    with check.step("predict_proba() on overlapping classes"):
        probabilities = _check_probabilities(check, model.predict_proba(probe_x), len(probe_x), "predict_proba()")
    _write_reserved_stand_ins(directory)
    before = snapshot(directory)
    with check.step("FittedModel.save()"):
        model.save(directory)
    check.writes_only_declared(directory, before, run_files, "FittedModel.save()")
    names = check.safe_formats(directory, run_files, "FittedModel.save()")
    check.ok(f"save() writes only safetensors, JSON or text ({', '.join(names)})")
    with check.step("load() of what save() wrote"), refuse_unpickling(directory):
        reloaded = head.load(directory)
        again = np.asarray(reloaded.predict_proba(probe_x))
    check.require(
        np.array_equal(again, probabilities),
        f"load(save(model)) scores differently on overlapping classes: max |difference| "
        f"{_max_difference(again, probabilities):.3g}; a reloaded run must give the same probabilities to the last "
        "digit. Save every array in the dtype it is scored in (float64 stays float64) and every scalar unrounded.",
    )
    uncertain = int(np.sum((probabilities[:, 1] > 0.01) & (probabilities[:, 1] < 0.99)))
    check.report.details["round_trip_uncertain"] = uncertain
    check.ok(f"save() and load() round-trip bit-exactly ({uncertain} of {len(probe_x)} probabilities between 0.01 and 0.99)")


def _write_reserved_stand_ins(directory: Path) -> None:
    """Files where a run keeps the toolkit's own: saving beside them shows a plugin that overwrites them."""
    from review_toolkit.runs.layout import CONFIG_FILE, RUN_FILE

    (directory / RUN_FILE).write_text('{"stand_in": true}\n', encoding="utf-8")
    (directory / CONFIG_FILE).write_text("stand_in: true\n", encoding="utf-8")


def _check_torch_head(check, head, data, seed, directory) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn

    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    with check.step("build(in_features, num_labels=2)"):
        module = head.build(train_x.shape[1], 2)
    check.require(isinstance(module, nn.Module), f"build() must return an nn.Module; got {type(module).__name__}.")
    check.require(any(True for _ in module.parameters()), "build() returned a module without parameters.")
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    with check.step("forward pass and training steps"):
        logits = module(x)
        check.require(
            tuple(logits.shape) == (len(train_x), 2),
            f"the module must map [batch, {train_x.shape[1]}] to [batch, 2] logits; got {tuple(logits.shape)}.",
        )
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
        module.train()
        for _ in range(100):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(module(x), y)
            loss.backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            test_logits = module(torch.from_numpy(test_x))
    accuracy = float((test_logits.argmax(dim=1).numpy() == test_y).mean())
    check.require(accuracy >= 0.8, f"learns a separable toy problem to only {accuracy:.0%} accuracy (want >= 80%).")
    check.ok(f"builds and trains ({accuracy:.0%} accuracy on a separable toy problem)")
    path = directory / "head.safetensors"
    with check.step("saving state_dict() as safetensors (as the toolkit does)"):
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
        rebuilt = head.build(train_x.shape[1], 2)
        rebuilt.load_state_dict(load_file(str(path)))
        rebuilt.eval()
        with torch.no_grad():
            again = rebuilt(torch.from_numpy(test_x))
    check.require(
        torch.equal(again, test_logits),
        "build() + load_state_dict(saved) scores differently from the trained module; build() must create "
        "every weight the forward pass uses as a registered parameter or buffer.",
    )
    check.ok("state_dict round-trips through safetensors bit-exactly")


# --------------------------------------------------------------------------- backbones


def _check_backbone_declarations(check: _Checker, backbone: Backbone) -> None:
    check.check_description(backbone)
    check.require(isinstance(backbone.default_checkpoint, str), "`default_checkpoint` must be a string.")
    check.require(
        isinstance(backbone.max_length, int) and backbone.max_length >= 1,
        f"`max_length` must be a positive int (tokens); got {backbone.max_length!r}.",
    )
    for attribute in ("lora_targets", "quantization_skip"):
        value = getattr(backbone, attribute)
        check.require(
            isinstance(value, tuple) and all(isinstance(item, str) and item for item in value),
            f"`{attribute}` must be a tuple of module-name strings; got {value!r}.",
        )
    check.ok("declares default_checkpoint, max_length, lora_targets and quantization_skip with the right types")


def _check_prepare_texts(check: _Checker, backbone: Backbone, texts: list[str]) -> list[str]:
    with check.step("prepare_texts()"):
        prepared = backbone.prepare_texts(list(texts))
    check.require(
        isinstance(prepared, list) and len(prepared) == len(texts) and all(isinstance(t, str) for t in prepared),
        "prepare_texts() must return a list of strings, one per input text, in order.",
    )
    check.ok("prepare_texts() keeps one string per review")
    return prepared


def check_backbone(
    name: str,
    *,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    texts: list[str] | None = None,
    work_dir: str | Path | None = None,
) -> ConformanceReport:
    """Declarations, vectors of the declared size, determinism and (for featurizers) a save/load round trip.

    ``model`` is the checkpoint to load (``--model``); without it the backbone's
    default is used, which must then be loadable offline.
    """
    check = _Checker("backbone", name)
    backbone: Backbone = check.lookup("backbone", name, options)
    _check_backbone_declarations(check, backbone)
    if texts is None:
        texts, _ = tiny_reviews(12)
    prepared = _check_prepare_texts(check, backbone, texts)
    with check.step("resolve_checkpoint()"):
        checkpoint = backbone.resolve_checkpoint(model)
    check.require(isinstance(checkpoint, str), f"resolve_checkpoint() must return a string; got {checkpoint!r}.")
    with _directory(work_dir, "backbone") as directory:
        if isinstance(backbone, FeaturizerBackbone):
            _check_featurizer(check, backbone, checkpoint, prepared, directory)
        else:
            _check_encoder_backbone(check, backbone, checkpoint, prepared)
    return check.report


def _check_vectors(check: _Checker, vectors: np.ndarray, n: int, size: int, what: str) -> None:
    check.require(
        vectors.shape == (n, size), f"{what} gave shape {vectors.shape}; expected [{n}, embedding_size={size}]."
    )
    check.require(np.all(np.isfinite(vectors)), f"{what} gave NaN or infinite values.")
    check.require(n < 2 or not np.allclose(vectors, vectors[:1]), f"{what} gave the same vector for different texts.")


def _check_featurizer(check, backbone, checkpoint, texts, directory) -> None:
    from review_toolkit.inference.classifier import featurize
    from review_toolkit.runs.manifest import refuse_unpickling

    fit_texts, other_texts = texts[: len(texts) // 2 or 1], texts[len(texts) // 2 :] or texts
    with check.step("fit_featurizer() on training texts"):
        featurizer = backbone.fit_featurizer(fit_texts, checkpoint=checkpoint, seed=0)
    check.require(
        isinstance(featurizer, Featurizer),
        f"fit_featurizer() must return an object with embedding_size, transform(texts) and save(directory); "
        f"got {type(featurizer).__name__}.",
    )
    size = featurizer.embedding_size
    check.require(isinstance(size, (int, np.integer)) and size >= 1, f"embedding_size must be a positive int; got {size!r}.")
    with check.step("transform() of unseen texts"):
        vectors = featurize(featurizer, other_texts)
        twice = featurize(featurizer, other_texts)
    _check_vectors(check, vectors, len(other_texts), int(size), "transform()")
    check.require(np.array_equal(vectors, twice), "transform() is not deterministic: two calls gave different vectors.")
    check.ok(f"fits on training texts and transforms unseen ones into {size}-d vectors, deterministically")
    with check.step("Featurizer.save()"):
        featurizer.save(directory)
    names = check.safe_formats(directory, None, "Featurizer.save()")
    check.ok(f"Featurizer.save() writes only safetensors, JSON or text ({', '.join(names)})")
    with check.step("load_featurizer() of what save() wrote"), refuse_unpickling(directory):
        reloaded = backbone.load_featurizer(directory, checkpoint=checkpoint)
        again = featurize(reloaded, other_texts)
    check.require(
        np.array_equal(again, vectors),
        f"load_featurizer(save()) gives other vectors: max |difference| {_max_difference(again, vectors):.3g}.",
    )
    check.ok("save() and load_featurizer() round-trip bit-exactly")


def _check_encoder_backbone(check, backbone, checkpoint, texts) -> None:
    import torch

    from review_toolkit.inference.embeddings import embed_texts

    check.require(checkpoint, "has no default_checkpoint and no model= was given: pass model='path/or/hub-id'.")
    with check.step(f"load_tokenizer({checkpoint!r})"):
        tokenizer = backbone.load_tokenizer(checkpoint)
    check.require(getattr(tokenizer, "pad_token", None) is not None, "the tokenizer has no pad token; batches cannot be padded.")
    with check.step(f"load_encoder({checkpoint!r})"):
        encoder = backbone.load_encoder(checkpoint)
    check.require(isinstance(encoder, torch.nn.Module), f"load_encoder() must return an nn.Module; got {type(encoder).__name__}.")
    size = getattr(encoder, "embedding_size", None)
    check.require(isinstance(size, int) and size >= 1, f"the encoder must have an int `embedding_size`; got {size!r}.")
    check.require(
        isinstance(getattr(encoder, "transformer", None), torch.nn.Module),
        "the encoder must keep its Hugging Face model in `.transformer` (methods add adapters or quantize there).",
    )
    check.ok(f"loads tokenizer and encoder from {checkpoint} ({size}-d vectors)")
    module_names = [module_name for module_name, _ in encoder.transformer.named_modules()]
    unmatched = [t for t in backbone.lora_targets if not any(n == t or n.endswith("." + t) for n in module_names)]
    check.require(not unmatched, f"lora_targets {unmatched} match no module of the loaded model; LoRA would fail.")
    if backbone.lora_targets:
        check.ok(f"every lora_target names modules of the model ({', '.join(backbone.lora_targets)})")
    long_text = " ".join(["word"] * (backbone.max_length * 2))
    batch = list(texts) + [long_text]
    with check.step("embedding texts (one longer than max_length)"):
        vectors = embed_texts(encoder.eval(), tokenizer, batch, max_length=backbone.max_length, batch_size=4, progress=False)
        twice = embed_texts(encoder, tokenizer, batch, max_length=backbone.max_length, batch_size=4, progress=False)
    _check_vectors(check, vectors, len(batch), size, "embedding")
    check.require(
        np.allclose(vectors, twice, atol=1e-5),
        "embedding the same texts twice in eval mode gave different vectors (dropout left on?).",
    )
    check.ok("embeds texts, truncating at max_length, deterministically in eval mode")


# --------------------------------------------------------------------------- methods


def check_method(
    name: str,
    *,
    backbone: str,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> ConformanceReport:
    """Declarations, the method's duties in training, and a save/load round trip of the trained weights.

    ``backbone`` names the encoder backbone to adapt (a small one keeps this
    fast); ``model`` is its checkpoint, as with ``check_backbone``. For a method
    that trains the backbone: trainable weights are float32, one backward pass
    reaches every one of them, and ``gradient_checkpointing`` is honoured both
    ways. The trainable weights are then perturbed before saving, so a method
    that forgets to save what it trained fails; ``save`` runs beside stand-ins of
    the toolkit's files and must write only its ``run_files``.
    """
    import torch

    from review_toolkit.config import TrainConfig
    from review_toolkit.inference.embeddings import embed_texts
    from review_toolkit.runs.manifest import refuse_unpickling

    check = _Checker("method", name)
    method: Method = check.lookup("method", name, options)
    check.check_description(method)
    check.require(isinstance(method.trains_backbone, bool), "`trains_backbone` must be True or False.")
    check.require(isinstance(method.quantized, bool), "`quantized` must be True or False.")
    check.require(
        isinstance(method.default_learning_rate, (int, float)) and method.default_learning_rate > 0,
        f"`default_learning_rate` must be a positive number; got {method.default_learning_rate!r}.",
    )
    _check_optimizer_name(check, method.default_optimizer)
    try:
        registry.get("head", method.default_head)
    except PluginError as error:
        check.fail(f"`default_head` {method.default_head!r} cannot be loaded: {error}")
    run_files = check.check_run_files(method)
    check.ok("declares trains_backbone, default_learning_rate, default_optimizer, default_head, quantized and run_files")

    try:
        encoder_backbone, _ = registry.get("backbone", backbone)
    except PluginError as error:
        raise PluginContractError(f"check_method({name!r}): backbone {backbone!r} cannot be loaded: {error}") from error
    if isinstance(encoder_backbone, FeaturizerBackbone):
        raise PluginContractError(
            f"check_method({name!r}) needs a backbone with an encoder to adapt; {backbone!r} is a featurizer."
        )
    config = TrainConfig(backbone=backbone, method=name, model=model)
    with check.step("resolving the backbone's checkpoint and tokenizer"):
        checkpoint = encoder_backbone.resolve_checkpoint(model)
        tokenizer = encoder_backbone.load_tokenizer(checkpoint)
    with check.step(f"load_for_training({backbone!r}, {checkpoint!r})"):
        encoder = method.load_for_training(encoder_backbone, checkpoint, config)
    check.require(isinstance(encoder, torch.nn.Module), f"load_for_training() must return an nn.Module; got {type(encoder).__name__}.")
    check.require(isinstance(getattr(encoder, "embedding_size", None), int), "the encoder it returns lost `embedding_size`.")
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    if method.trains_backbone:
        check.require(trainable, "trains_backbone is True but load_for_training() left no parameter trainable.")
    else:
        check.require(not trainable, f"trains_backbone is False but {len(trainable)} encoder parameters require grad.")
    check.ok(f"load_for_training() gives an encoder with {sum(p.numel() for p in trainable):,} trainable parameters")

    texts, _ = tiny_reviews(4)
    max_length = min(64, encoder_backbone.max_length)
    if method.trains_backbone:
        _check_training_duties(check, method, encoder_backbone, checkpoint, tokenizer, texts, max_length, encoder, config)

    def embed(module: torch.nn.Module) -> np.ndarray:
        return embed_texts(module.eval(), tokenizer, texts, max_length=max_length, batch_size=8, progress=False)

    with check.step("embedding with the loaded encoder"):
        base = embed(encoder)
        if trainable:  # stand-in for training: every trainable weight moves, deterministically
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for parameter in trainable:
                    noise = torch.randn(parameter.shape, generator=generator).to(parameter.device, parameter.dtype)
                    parameter.add_(0.05 * noise)
        trained = embed(encoder)
    if trainable:
        check.require(not np.allclose(base, trained), "changing every trainable parameter did not change the vectors.")
    with _directory(work_dir, "method") as directory:
        _write_reserved_stand_ins(directory)
        before = snapshot(directory)
        with check.step("save()"):
            method.save(encoder, directory)
        check.writes_only_declared(directory, before, run_files, "save()")
        if method.trains_backbone:
            names = check.safe_formats(directory, run_files, "save()")
            check.ok(f"save() writes only safetensors, JSON or text ({', '.join(names)})")
        with check.step("load_trained() of what save() wrote"), refuse_unpickling(directory):
            reloaded = method.load_trained(encoder_backbone, checkpoint, directory, config)
            again = embed(reloaded)
    difference = _max_difference(again, trained)
    check.require(
        difference <= 1e-5,
        f"load_trained(save()) gives vectors {difference:.3g} away from the trained encoder's: what was trained "
        "is not (all) saved, or reloading does not rebuild the same model.",
    )
    check.ok(f"save() and load_trained() reproduce the trained encoder (max |difference| {difference:.1g})")
    return check.report


def _backward_pass(encoder: Any, tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[str], list[str]]:
    """One training step's forward and backward through ``encoder``, in train mode.

    Returns the trainable parameters that got no gradient, and the modules whose forward ran
    again during backward: the recomputation that gradient checkpointing is.
    """
    import torch

    device = next(encoder.parameters()).device
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    in_backward = [False]
    recomputed: list[str] = []

    def note(name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if in_backward[0] and name not in recomputed:
                recomputed.append(name)

        return hook

    handles = [module.register_forward_hook(note(name)) for name, module in encoder.named_modules() if name]
    try:
        encoder.train()
        encoder.zero_grad(set_to_none=True)
        pooled = encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        weights = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(0)).to(pooled.device)
        loss = (pooled.float() * weights).sum()
        in_backward[0] = True
        loss.backward()
    finally:
        in_backward[0] = False
        for handle in handles:
            handle.remove()
        encoder.eval()
    missing = [name for name, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    encoder.zero_grad(set_to_none=True)
    return missing, recomputed


def _check_training_duties(check, method, backbone, checkpoint, tokenizer, texts, max_length, encoder, config) -> None:
    """What Trainer relies on: float32 trainable weights, a gradient for each, checkpointing on request."""
    import dataclasses

    import torch

    not_float32 = [name for name, p in encoder.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    check.require(
        not not_float32,
        f"trainable parameters must be float32 (the optimizer and mixed precision expect it); "
        f"{', '.join(not_float32[:3])} are not.",
    )
    with check.step("a forward and backward pass through the encoder load_for_training() returned"):
        missing, recomputed = _backward_pass(encoder, tokenizer, texts, max_length)
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    check.require(
        not missing,
        f"trainable parameters get no gradient from the pooled output: {shown}. Multi-process (DDP) training "
        "stops on a trainable parameter without gradient; freeze what the forward pass never uses "
        "(requires_grad_(False)) in load_for_training().",
    )
    check.ok("one backward pass gives every trainable parameter a gradient")
    check.require(
        not recomputed,
        f"with gradient_checkpointing off, modules ran their forward again during backward ({', '.join(recomputed[:3])}): "
        "enable checkpointing only when config.gradient_checkpointing is set.",
    )
    checkpointed = dataclasses.replace(config, gradient_checkpointing=True)
    with check.step("load_for_training() with gradient_checkpointing=True"):
        encoder_checkpointed = method.load_for_training(backbone, checkpoint, checkpointed)
        _, recomputed = _backward_pass(encoder_checkpointed, tokenizer, texts, max_length)
    check.require(
        recomputed,
        "ignores gradient_checkpointing: with config.gradient_checkpointing set, no module recomputed its forward "
        "during backward. Checkpointing is the method's duty: call "
        "review_toolkit.plugin_api.enable_gradient_checkpointing(encoder, config) in load_for_training().",
    )
    check.ok(f"honours gradient_checkpointing ({len(recomputed)} modules recomputed in backward when set, none when not)")


def _check_optimizer_name(check: _Checker, optimizer: Any) -> None:
    try:
        from transformers.training_args import OptimizerNames

        known = {item.value for item in OptimizerNames}
    except ImportError:  # pragma: no cover - transformers always ships it today
        known = set()
    check.require(
        isinstance(optimizer, str) and (not known or optimizer in known),
        f"`default_optimizer` {optimizer!r} is not a TrainingArguments `optim` name.",
    )


# --------------------------------------------------------------------------- end to end


def check_training(
    *,
    backbone: str,
    method: str = "frozen",
    head: str | None = None,
    model: str | None = None,
    data: str | Path | None = None,
    work_dir: str | Path | None = None,
    min_f1: float | None = None,
    **options: Any,
) -> ConformanceReport:
    """Train the composition on a tiny dataset through ``review_toolkit.train``, then ``load_run`` it.

    Checks that the run directory records every plugin's distribution, version
    and options and the learning rate used, holds no pickle, and that the
    reloaded classifier gives the same probabilities as the trained one to the
    last digit (within ``COMPILED_TOLERANCE`` with ``compile=True``: the trained
    classifier scores through compiled kernels). ``options`` are further
    ``TrainConfig`` fields (``epochs=1``, ``head_options={...}`` ...);
    ``min_f1`` optionally demands a test macro F1. The run directory is kept
    (``report.details["run_dir"]``) only when ``work_dir`` is given.
    """
    from review_toolkit.config import TrainConfig
    from review_toolkit.runs.loader import load_run
    from review_toolkit.train.pipeline import train

    label = f"{backbone} + {method} + {head or 'default head'}"
    check = _Checker("composition", label)
    with _directory(work_dir, "training") as directory:
        data_path = str(data) if data is not None else str(write_tiny_dataset(directory / "tiny.csv"))
        settings: dict[str, Any] = {"epochs": 2, "batch_size": 16, "early_stopping_patience": 0}
        settings.update(options)
        config = TrainConfig(
            backbone=backbone,
            method=method,
            head=head,
            model=model,
            data=data_path,
            output_dir=str(directory / "run"),
            overwrite=True,
            cache_dir=str(directory / "cache"),
            **settings,
        )
        try:
            result = train(config, progress=False)
        except PluginError as error:
            raise PluginContractError(f"{label}: training was refused or a plugin failed: {error}") from error
        except Exception as error:
            raise PluginContractError(f"{label}: training raised {type(error).__name__}: {error}") from error
        f1 = result.metrics.get("f1_macro")
        check.require(isinstance(f1, float) and math.isfinite(f1), f"test macro F1 is not a number: {f1!r}.")
        if min_f1 is not None:
            check.require(f1 >= min_f1, f"test macro F1 {f1:.3f} is below the required {min_f1:.3f}.")
        check.ok(f"trains on {result.info['data']['sizes']} reviews (test macro F1 {f1:.3f})")
        check.report.details.update(metrics=result.metrics, info=result.info, run_dir=str(result.run_dir))

        recorded = result.info.get("plugins", [])
        kinds = {entry.get("kind"): entry for entry in recorded}
        for kind in ("backbone", "method", "head"):
            entry = kinds.get(kind, {})
            check.require(
                entry.get("distribution") and entry.get("version"),
                f"run.json 'plugins' does not record the {kind}'s distribution and version: {recorded!r}.",
            )
        check.ok("run.json records each plugin's distribution and version: " + ", ".join(
            f"{e['kind']} {e['name']} ({e['distribution']} {e['version']})" for e in recorded
        ))
        plugin_options = result.info.get("plugin_options", {})
        check.require(
            set(plugin_options) == {"backbone", "method", "head"},
            f"run.json 'plugin_options' must hold the backbone's, method's and head's options: {plugin_options!r}.",
        )
        learning_rate = result.info.get("learning_rate")
        check.require(
            isinstance(learning_rate, float) and learning_rate > 0,
            f"run.json must record the learning rate used; got {learning_rate!r}.",
        )
        check.ok(f"run.json records every plugin's options and the learning rate used ({learning_rate:g})")
        # checkpoints/ is Trainer's resume state: never read by load_run, and outside the run's manifest.
        from review_toolkit.runs.manifest import UNCOVERED_DIRECTORIES

        check.no_pickles(Path(result.run_dir), "train()", skip=UNCOVERED_DIRECTORIES)

        texts, _ = tiny_reviews(6, seed=1)
        with check.step("load_run() of the run directory"):
            reloaded = load_run(result.run_dir, device="cpu")
            before = result.classifier.predict_proba(texts)
            after = reloaded.predict_proba(texts)
        difference = _max_difference(before, after)
        if config.compile:
            check.require(
                difference <= COMPILED_TOLERANCE,
                f"load_run() scores differently from the trained (compiled) classifier: max |difference| "
                f"{difference:.3g}, more than float32 rounding in compiled kernels explains ({COMPILED_TOLERANCE:g}).",
            )
            check.ok(f"load_run() reproduces the compiled classifier's probabilities (max |difference| {difference:.1g})")
        else:
            check.require(
                difference == 0,
                f"load_run() scores differently from the trained classifier: max |difference| "
                f"{difference:.3g}; a reloaded run must match to the last digit.",
            )
            check.ok("load_run() reproduces the trained classifier's probabilities bit-exactly")
    return check.report


def check_plugin(kind: str, name: str, **options: Any) -> ConformanceReport:
    """``check_backbone``, ``check_method`` or ``check_head`` by kind (``options`` go to that check)."""
    checks = {"backbone": check_backbone, "method": check_method, "head": check_head}
    if kind not in checks:
        raise ValueError(f"Unknown plugin kind {kind!r}; kinds are: {', '.join(checks)}.")
    return checks[kind](name, **options)


# --------------------------------------------------------------------------- throwaway distributions


@contextlib.contextmanager
def temporary_distribution(
    name: str,
    entry_points: dict[str, dict[str, str]],
    *,
    version: str = "0.0.0",
    modules: dict[str, str] | None = None,
    directory: str | Path | None = None,
) -> Iterator[Path]:
    """Register plugins for the duration of a ``with`` block, without pip: a ``.dist-info`` on ``sys.path``.

    ``entry_points`` maps a kind (``backbone``, ``method``, ``head``) or a full
    group name to ``{plugin name: "module:Class"}``; ``modules`` maps module
    names to source code written beside it. The registry sees the distribution
    exactly as it would an installed one (name, version, entry points), which
    lets a plugin author test a class under its registered name before
    packaging it, and the toolkit's tests build broken plugins on purpose::

        with temporary_distribution("acme", {"head": {"acme-head": "acme_head:AcmeHead"}},
                                    modules={"acme_head": SOURCE}):
            check_head("acme-head")
    """
    with contextlib.ExitStack() as stack:
        root = Path(directory) if directory is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root.mkdir(parents=True, exist_ok=True)
        info = root / f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
        lines = []
        for group, plugins in entry_points.items():
            lines.append(f"[{registry.GROUPS.get(group, group)}]")
            lines += [f"{plugin} = {target}" for plugin, target in plugins.items()]
            lines.append("")
        (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(source, encoding="utf-8")
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        registry.refresh()
        try:
            yield root
        finally:
            if str(root) in sys.path:
                sys.path.remove(str(root))
            for module in modules or {}:
                sys.modules.pop(module, None)
            importlib.invalidate_caches()
            registry.refresh()
