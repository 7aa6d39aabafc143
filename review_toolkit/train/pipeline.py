"""Training a classifier end to end: config -> data -> backbone (+ method) -> head -> metrics -> run.

``train(config)`` is the library entry point behind ``review-toolkit train``;
``review_toolkit.runs.loader.load_run(path)`` rebuilds the classifier a run directory describes.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from review_toolkit import __version__, registry

from review_toolkit.runtime import distributed
from review_toolkit.inference.classifier import Classifier, featurize
from review_toolkit.runtime.os_errors import naming_path
from review_toolkit.runtime.quiet import quiet_call
from review_toolkit.runtime.hub import portable_checkpoint_name
from review_toolkit.accel.plan import AccelerationPlan
from review_toolkit.config import TrainConfig
from review_toolkit.data import LABEL_NAMES, ReviewSplits, load_splits_for
from review_toolkit.inference.embedding_cache import EmbeddingStore, cached_embeddings
from review_toolkit.inference.embeddings import embed_texts
from review_toolkit.inference.head_outputs import build_head
from review_toolkit.errors import PluginError
from review_toolkit.evaluation.run_evaluation import calibrate_after_training
from review_toolkit.runs.model_card import write_model_card
from review_toolkit.evaluation.metrics import classification_metrics, classification_report
from review_toolkit.train.model import HeadOnlyModel, ReviewClassifierModel, balanced_class_weights, count_parameters
from review_toolkit.plugin_api.contracts import Backbone, FeaturizerBackbone, FittedHead, Head, Method, TorchHead
from review_toolkit.registry import PluginSource
from review_toolkit.plugin_api.options import recordable
from review_toolkit.runs.layout import (
    RESERVED_NAMES,
    check_plugin_writes,
    snapshot,
    CHECKPOINT_DIRECTORY,
    CONFIG_FILE,
    FEATURIZER_DIRECTORY,
    METRICS_FILE,
    REPORT_FILE,
    RUN_FILE,
    TOKENIZER_DIRECTORY,
    TORCH_HEAD_FILE,
    PARTIAL_SUFFIX,
    RunWriter,
    write_json,
)
from review_toolkit.train.trainer import (
    feature_dataset,
    gathered_state_dict,
    tokenized_dataset,
    train_with_trainer,
)

logger = logging.getLogger(__name__)


@dataclass
class Composition:
    """The three plugins of a run, looked up and checked before any model loads."""

    backbone: Backbone
    method: Method
    head: Head
    sources: list[PluginSource] = field(default_factory=list)

    @classmethod
    def resolve(cls, config: TrainConfig) -> "Composition":
        """Look the plugins up with their options (checked against what each declares), then check them."""
        backbone, backbone_source = registry.get("backbone", config.backbone, config.backbone_options)
        method, method_source = registry.get("method", config.method, config.method_options)
        head, head_source = registry.get("head", config.head or method.default_head, config.head_options)
        composition = cls(backbone, method, head, [backbone_source, method_source, head_source])
        composition.check()
        if hasattr(backbone, "trust_remote_code"):
            backbone.trust_remote_code = config.trust_remote_code
        return composition

    def check(self) -> None:
        """Refuse combinations that cannot train, saying what would."""
        if isinstance(self.backbone, FeaturizerBackbone) and self.method.trains_backbone:
            frozen = _plugins_where("method", lambda method: not method.trains_backbone)
            raise PluginError(
                f"The {self.backbone.name!r} backbone is a featurizer fitted on the training texts: it has no "
                f"trainable encoder for the {self.method.name!r} method to adapt. Use --method "
                f"{' or --method '.join(frozen) or 'frozen'} with it, or a backbone with a trainable encoder "
                f"for --method {self.method.name} (see 'review-toolkit plugins')."
            )
        if self.method.trains_backbone and not self.head.trains_with_trainer:
            torch_heads = _plugins_where("head", lambda head: head.trains_with_trainer)
            raise PluginError(
                f"The {self.head.name!r} head is fitted on frozen embeddings and cannot train through the "
                f"{self.method.name!r} method. Use --method frozen --head {self.head.name}, or keep "
                f"--method {self.method.name} with a head trained by Trainer: {', '.join(torch_heads)}."
            )
        if not isinstance(self.head, (TorchHead, FittedHead)):
            raise PluginError(
                f"The head {self.head.name!r} must subclass review_toolkit.plugin_api.contracts.TorchHead or FittedHead."
            )
        self._check_run_files()

    @property
    def head_files(self) -> tuple[str, ...]:
        """What the head's save writes at the top of the run (the toolkit saves a torch head's weights)."""
        return tuple(self.head.run_files) if isinstance(self.head, FittedHead) else (TORCH_HEAD_FILE,)

    def _check_run_files(self) -> None:
        """Refuse declarations that would let one plugin's files overwrite another's or the toolkit's."""
        declared = [("method", self.method, tuple(self.method.run_files))]
        if isinstance(self.head, FittedHead):
            declared.append(("head", self.head, self.head_files))
        for kind, plugin, names in declared:
            reserved = sorted(set(names) & RESERVED_NAMES)
            if reserved:
                raise PluginError(
                    f"The {kind} {plugin.name!r} declares {reserved[0]!r} in `run_files`, a name the toolkit reserves "
                    f"for its own files ({', '.join(sorted(RESERVED_NAMES))}); its distribution must pick another name."
                )
        shared = sorted(set(self.method.run_files) & set(self.head_files))
        if shared:
            raise PluginError(
                f"The method {self.method.name!r} and the head {self.head.name!r} both write {shared[0]!r} in the run "
                "directory (their `run_files`); one would overwrite the other. Choose another head or method."
            )

    def recorded(self, config: TrainConfig) -> TrainConfig:
        """``config`` with what the run used where it left the choice to the plugins: head, learning rate, options."""
        return dataclasses.replace(
            config,
            head=config.head or self.head.name,
            learning_rate=config.learning_rate or self.method.default_learning_rate,
            epochs=config.epochs or self.method.default_epochs,
            backbone_options=recordable(self.backbone.options),
            method_options=recordable(self.method.options),
            head_options=recordable(self.head.options),
        )

    def options_record(self) -> dict[str, dict[str, Any]]:
        """Every plugin's option values, as run.json records them."""
        return {
            "backbone": recordable(self.backbone.options),
            "method": recordable(self.method.options),
            "head": recordable(self.head.options),
        }


def _plugins_where(kind: str, predicate: Callable[[Any], bool]) -> list[str]:
    """Names of the loadable plugins of ``kind`` that satisfy ``predicate`` (for suggestions in errors)."""
    names = []
    for name in registry.available(kind):
        try:
            plugin, _ = registry.get(kind, name)
        except PluginError:
            continue  # a broken plugin is no suggestion
        if predicate(plugin):
            names.append(name)
    return names


def head_name(config: TrainConfig) -> str:
    """The head a run of ``config`` uses: the one named, else the method's ``default_head``."""
    if config.head:
        return config.head
    method, _ = registry.get("method", config.method)
    return method.default_head


def default_output_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.backbone}-{config.method}-{head_name(config)}"


def peak_memory() -> dict[str, float]:
    """Peak process RSS, and peak GPU memory when a GPU was used, in GiB."""
    memory = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        memory["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return memory


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    report: str
    classifier: Classifier
    info: dict[str, Any]


@dataclass
class RunInputs:
    """What every kind of training reads: the checked plugins, the data and the tokenizer."""

    composition: Composition
    splits: ReviewSplits
    checkpoint: str
    tokenizer: Any  # None for a featurizer backbone: it is fitted on the training texts instead
    max_length: int

    @classmethod
    def load(cls, config: TrainConfig, composition: Composition, splits: ReviewSplits) -> "RunInputs":
        """The checkpoint the backbone resolves and its tokenizer, with the data and plugins."""
        backbone = composition.backbone
        checkpoint = backbone.resolve_checkpoint(config.model)
        tokenizer = None if isinstance(backbone, FeaturizerBackbone) else backbone.load_tokenizer(checkpoint)
        max_length = min(config.max_length or backbone.max_length, backbone.max_length)
        return cls(composition, splits, checkpoint, tokenizer, max_length)


@dataclass
class Trained:
    """A trained classifier with its raw scores on the held-out splits and what training reports."""

    classifier: Classifier
    info: dict[str, Any]
    test_p_fake: np.ndarray
    validation_p_fake: np.ndarray


def train(config: TrainConfig, *, progress: bool = True, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train the composition ``config`` describes and write its run directory.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects for every training that
    runs through Trainer (fine-tuning, torch heads on frozen embeddings): logging, timing.
    The libraries' own chatter (weight-loading bars, kernel lookups) stays quiet unless
    ``progress``.
    """
    with quiet_call(progress=progress):
        return _train(config, progress=progress, callbacks=callbacks)


def _train(config: TrainConfig, *, progress: bool, callbacks: Sequence[Any]) -> TrainResult:
    config.validate()
    composition = Composition.resolve(config)
    config = composition.recorded(config)  # config.yaml and the model card show the values used
    splits = load_splits_for(config)
    writer = _run_writer(config)  # before any model loads: its refusals cost nothing then
    if config.seed is not None:
        torch.manual_seed(config.seed)
    started = time.perf_counter()
    # Under a multi-process launch every process trains and scores; only the main one writes files.
    writes = distributed.is_main_process()
    try:
        inputs = RunInputs.load(config, composition, splits)
        with distributed.main_process_first():  # Trainer's checkpoints need the staging directory everywhere
            staging = writer.open() if writes else writer.partial
    except BaseException:
        writer.release()  # nothing staged yet: only the lock to give back
        raise
    try:
        if inputs.composition.method.trains_backbone:
            trained = _fine_tune(config, inputs, staging, progress, callbacks)
        else:
            trained = _train_on_frozen(config, inputs, staging, progress, callbacks)
        classifier = trained.classifier
        # Calibrate on validation (temperature scaling) and keep the raw split scores for `evaluate`.
        test_p_fake, calibration_info = calibrate_after_training(
            staging if writes else None, classifier, inputs.splits, trained.validation_p_fake, trained.test_p_fake
        )
        training_seconds = time.perf_counter() - started
        metrics, report = _test_metrics(inputs.splits, test_p_fake, classifier.threshold)
        info = _run_info(inputs, classifier, calibration_info, _resources(training_seconds), trained.info, writer.final)
        info["learning_rate"] = config.learning_rate  # the one used: the method's default when none was given
        info["scored_with"] = classifier.scored_with  # what computed the test metrics (the card says it)
        classifier.info = info
        if writes:
            with naming_path(staging):  # a failed write to an open file names no file of its own
                _write_run(staging, config, inputs.tokenizer, classifier, inputs.composition, metrics, report, info)
                writer.commit()
        distributed.wait_for_everyone()  # every process returns once the run directory is in place
    except BaseException as error:
        # An interrupted fine-tune keeps its checkpoints for --resume-from; anything else is removed.
        if writes:
            writer.abandon(error)
        raise
    return TrainResult(writer.final, metrics, report, classifier, info)


def _test_metrics(splits: ReviewSplits, test_p_fake: np.ndarray, threshold: float) -> tuple[dict[str, Any], str]:
    """Metrics and report on the test split; a run without one (a cross-validation's refit) says so."""
    labels = splits.test.label.to_numpy()
    if not len(labels):
        note = "no test split: trained on all the data; the cross-validation's folds are its estimate (../cv.json)"
        return {"n_examples": 0, "note": note}, f"No test metrics: {note}.\n"
    predictions = (test_p_fake >= threshold).astype(int)
    return classification_metrics(labels, predictions, test_p_fake), classification_report(labels, predictions)


def _run_writer(config: TrainConfig) -> RunWriter:
    """The writer of this run's directory; it keeps the staging directory a resume reads from."""
    output_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
    # Resuming from the staging directory itself, or from a checkpoint inside it: it must be kept.
    staging_dir = Path(str(output_dir) + PARTIAL_SUFFIX).resolve()
    resume_path = Path(config.resume_from).expanduser().resolve() if config.resume_from else None
    resuming_in_place = resume_path is not None and (resume_path == staging_dir or staging_dir in resume_path.parents)
    # The main process writes and holds the directory's lock; the others of a launch write nothing.
    return RunWriter(
        output_dir, overwrite=config.overwrite, resuming=resuming_in_place, lock=distributed.is_main_process()
    )


def _resources(training_seconds: float) -> dict[str, Any]:
    """Time, peak memory, device and process count of the run, for run.json."""
    return {
        "training_seconds": round(training_seconds, 2),
        **{key: round(value, 3) for key, value in peak_memory().items()},
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "processes": distributed.process_count(),
    }


def _run_info(
    inputs: RunInputs,
    classifier: Classifier,
    calibration: dict[str, Any],
    resources: dict[str, Any],
    training: dict[str, Any],
    run_dir: Path,
) -> dict[str, Any]:
    """run.json: what was trained, on what data, calibrated how, at what cost, and how training went."""
    composition, splits = inputs.composition, inputs.splits
    hub_id = composition.backbone.hub_id(inputs.checkpoint)
    return {
        "toolkit_version": __version__,
        "backbone": composition.backbone.name,
        "method": composition.method.name,
        "head": composition.head.name,
        "checkpoint": inputs.checkpoint,
        # The base by its Hub id, else relative to the run: what the model card shows (no home folder).
        "base_model": hub_id or portable_checkpoint_name(inputs.checkpoint, run_dir),
        "max_length": inputs.max_length,
        "embedding_size": classifier.embedding_size,
        "label_names": list(LABEL_NAMES),
        "threshold": classifier.threshold,
        "data": {"source": splits.source, "sizes": splits.sizes(), "split": splits.method},
        **calibration,
        "plugins": [source.as_dict() for source in composition.sources],
        "plugin_options": composition.options_record(),
        **resources,
        **training,
    }


def _fine_tune(
    config: TrainConfig, inputs: RunInputs, staging: Path, progress: bool, callbacks: Sequence[Any] = ()
) -> Trained:
    """Fine-tune the encoder with the head through Trainer, then score the held-out splits."""
    backbone, method = inputs.composition.backbone, inputs.composition.method
    model = _classifier_model(config, inputs, inputs.splits.train.label.tolist())
    trainable, total = count_parameters(model)  # before FSDP, when launched with it, shards the weights
    plan = AccelerationPlan.for_fine_tuning(config, model.encoder, backbone=backbone.name, max_length=inputs.max_length)
    plan.prepare_encoder(model.encoder)
    plan.prepare_model(model)

    def dataset(frame):
        texts = backbone.prepare_texts(frame.text.tolist())
        return tokenized_dataset(inputs.tokenizer, texts, frame.label.tolist(), inputs.max_length)

    try:
        trainer = train_with_trainer(
            model,
            config=config,
            train_dataset=dataset(inputs.splits.train),
            validation_dataset=dataset(inputs.splits.validation),
            checkpoint_dir=staging / CHECKPOINT_DIRECTORY,
            learning_rate=config.learning_rate or method.default_learning_rate,
            optimizer=config.optimizer or method.default_optimizer,
            plan=plan,
            tokenizer=inputs.tokenizer,
            max_length=inputs.max_length,
            progress=progress,
            callbacks=callbacks,
        )
    finally:
        plan.finish(model)  # scoring runs the encoder itself
    if trainer.is_fsdp_enabled:
        model = _unsharded_copy(config, inputs, gathered_state_dict(trainer))
    model.eval()
    classifier = Classifier(
        backbone=backbone, tokenizer=inputs.tokenizer, encoder=model.encoder, head=model.head,
        max_length=inputs.max_length, head_description=registry.describe(inputs.composition.head),
    )

    def p_fake(texts: list[str]) -> np.ndarray:
        return classifier.predict_proba(texts, batch_size=config.eval_batch_size)

    info = {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "epochs_run": trainer.state.epoch,
        "best_validation_f1_macro": trainer.state.best_metric,
        "train_samples_per_second": _samples_per_second(len(inputs.splits.train), trainer),
        **plan.report(),
        **_gradient_sync_report(trainer),
    }
    return Trained(
        classifier,
        info,
        test_p_fake=distributed.map_in_shards(p_fake, inputs.splits.test.text.tolist()),
        validation_p_fake=distributed.map_in_shards(p_fake, inputs.splits.validation.text.tolist()),
    )


def _gradient_sync_report(trainer: Any) -> dict[str, Any]:
    """For run.json: how DDP all-reduced the gradients, in a launch of several processes that used DDP."""
    if distributed.process_count() < 2 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return {}
    return {"gradient_sync": trainer.gradient_sync.describe()}


def _classifier_model(config: TrainConfig, inputs: RunInputs, train_labels: list[int] | None) -> ReviewClassifierModel:
    """The method's encoder under a fresh head, on this process's device (class weights from ``train_labels``)."""
    composition = inputs.composition
    encoder = composition.method.load_for_training(composition.backbone, inputs.checkpoint, config)
    torch_head = build_head(composition.head, encoder.embedding_size, len(LABEL_NAMES))
    weights = (
        balanced_class_weights(train_labels) if train_labels is not None and config.class_weight == "balanced" else None
    )
    model = ReviewClassifierModel(encoder, torch_head, weights)
    if not composition.method.quantized:
        model.to(distributed.device())  # a quantized model is already placed by its device map
    else:
        torch_head.to(next(p.device for p in encoder.parameters()))
    return model


def _unsharded_copy(config: TrainConfig, inputs: RunInputs, state: dict[str, torch.Tensor]) -> ReviewClassifierModel:
    """A plain copy of a model FSDP trained, holding the weights gathered from the shards.

    FSDP leaves every weight sharded over the processes, and a forward pass through sharded
    modules is a collective. Scoring and saving use this copy on every process instead, built
    as load_run builds it.
    """
    model = _classifier_model(config, inputs, None)
    model.load_state_dict(state)
    return model


def _samples_per_second(train_size: int, trainer: Any) -> float | None:
    """Reviews trained per second of Trainer's train loop (evaluation included).

    Counted from the data, not from Trainer's own figure, which assumes every
    batch is full: token-budget batches are not.
    """
    runtime = next((row["train_runtime"] for row in reversed(trainer.state.log_history) if "train_runtime" in row), None)
    if not runtime:
        return None
    return round(train_size * trainer.state.epoch / runtime, 2)


def _train_on_frozen(
    config: TrainConfig, inputs: RunInputs, staging: Path, progress: bool, callbacks: Sequence[Any] = ()
) -> Trained:
    """Embed every split once with the untouched backbone (or its featurizer), then fit the head on them."""
    backbone, method, head = inputs.composition.backbone, inputs.composition.method, inputs.composition.head
    splits, checkpoint, tokenizer, max_length = inputs.splits, inputs.checkpoint, inputs.tokenizer, inputs.max_length
    plan = AccelerationPlan.for_head_training(config, method.name)
    frames = [splits.train, splits.validation, splits.test]
    texts = backbone.prepare_texts([text for frame in frames for text in frame.text.tolist()])
    n_train, n_val = len(splits.train), len(splits.validation)
    encoder, featurizer = None, None
    if isinstance(backbone, FeaturizerBackbone):
        # Fitted on the training texts only, so nothing of validation or test leaks into the features;
        # not cached: the fitted state is part of the run and fitting is the cheap part.
        featurizer = backbone.fit_featurizer(texts[:n_train], checkpoint=checkpoint, seed=config.seed)
        features, was_cached = featurize(featurizer, texts), False
    else:
        encoder = method.load_for_training(backbone, checkpoint, config).to(distributed.device())

        def embed(shard: list[str]) -> np.ndarray:
            return embed_texts(
                encoder, tokenizer, shard, max_length=max_length, batch_size=config.eval_batch_size,
                progress=progress and distributed.is_main_process(),
            )

        store = EmbeddingStore(config.cache_dir, backbone=backbone.name, checkpoint=checkpoint, max_length=max_length)
        features, was_cached = cached_embeddings(
            store, texts, lambda missing: distributed.map_in_shards(embed, missing),
            dimension=getattr(encoder, "embedding_size", None),
        )
    train_x, val_x, test_x = features[:n_train], features[n_train : n_train + n_val], features[n_train + n_val :]
    train_y, val_y = splits.train.label.to_numpy(), splits.validation.label.to_numpy()
    info: dict[str, Any] = {"embeddings_cached": was_cached, "trainable_parameters": 0}

    if isinstance(head, FittedHead):
        fitted = head.fit(train_x, train_y, val_x, val_y, seed=config.seed, class_weight=config.class_weight)
        scorer: Any = fitted
    else:
        torch_head = build_head(head, features.shape[1], len(LABEL_NAMES))
        weights = balanced_class_weights(train_y.tolist()) if config.class_weight == "balanced" else None
        model = HeadOnlyModel(torch_head, weights).to(distributed.device())
        trainer = train_with_trainer(
            model,
            config=config,
            train_dataset=feature_dataset(train_x, train_y.tolist()),
            validation_dataset=feature_dataset(val_x, val_y.tolist()),
            checkpoint_dir=staging / CHECKPOINT_DIRECTORY,
            learning_rate=config.learning_rate or method.default_learning_rate,
            optimizer=config.optimizer or "adamw_torch",
            plan=plan,
            progress=progress,
            callbacks=callbacks,
        )
        info["trainable_parameters"] = count_parameters(model)[0]
        info["epochs_run"] = trainer.state.epoch
        info["best_validation_f1_macro"] = trainer.state.best_metric
        info.update(_gradient_sync_report(trainer))
        torch_head.eval()
        scorer = torch_head
    classifier = Classifier(
        backbone=backbone, tokenizer=tokenizer, encoder=encoder, head=scorer, max_length=max_length, featurizer=featurizer,
        head_description=registry.describe(head),
    )
    test_p_fake = classifier.p_fake_from_embeddings(test_x) if len(test_x) else np.zeros(0)  # no test split: a refit
    return Trained(classifier, info, test_p_fake, classifier.p_fake_from_embeddings(val_x))


def _write_run(
    staging: Path,
    config: TrainConfig,
    tokenizer: Any,
    classifier: Classifier,
    composition: Composition,
    metrics: dict[str, Any],
    report: str,
    info: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    backbone, method, head = composition.backbone, composition.method, composition.head
    config.save(staging / CONFIG_FILE)
    # Each plugin writes only the names it declares: what it wrote elsewhere would overwrite, or
    # be overwritten by, the toolkit's files or another plugin's.
    if classifier.featurizer is not None:
        (staging / FEATURIZER_DIRECTORY).mkdir()
        before = snapshot(staging)
        classifier.featurizer.save(staging / FEATURIZER_DIRECTORY)
        check_plugin_writes(staging, before, plugin=f"backbone {backbone.name!r}", allowed=(FEATURIZER_DIRECTORY,))
    else:
        tokenizer.save_pretrained(staging / TOKENIZER_DIRECTORY)
        before = snapshot(staging)
        method.save(classifier.encoder, staging)
        check_plugin_writes(staging, before, plugin=f"method {method.name!r}", allowed=tuple(method.run_files))
    if isinstance(classifier.head, torch.nn.Module):
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in classifier.head.state_dict().items()}
        save_file(state, str(staging / TORCH_HEAD_FILE))
    else:
        before = snapshot(staging)
        classifier.head.save(staging)
        check_plugin_writes(staging, before, plugin=f"head {head.name!r}", allowed=composition.head_files)
    write_json(staging / METRICS_FILE, metrics)
    (staging / REPORT_FILE).write_text(report, encoding="utf-8")
    write_model_card(staging, config, info, metrics, report)
    # run.json last: its presence marks a complete run.
    write_json(staging / RUN_FILE, info)
