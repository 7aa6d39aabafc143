"""Loading a run directory back into a classifier, without executing anything stored in it."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from review_toolkit import registry
from review_toolkit.config import TrainConfig
from review_toolkit.errors import ReviewToolkitError, RunDirectoryError
from review_toolkit.inference.classifier import Classifier
from review_toolkit.inference.ensemble import EnsembleClassifier
from review_toolkit.inference.head_outputs import build_head
from review_toolkit.inference.onnx_backend import BACKENDS, load_onnx_encoder, onnxruntime_available, read_export, require_onnxruntime
from review_toolkit.plugin_api.contracts import FeaturizerBackbone, FittedHead
from review_toolkit.runs.layout import (
    CHECKPOINT_DIRECTORY,
    CONFIG_FILE,
    FEATURIZER_DIRECTORY,
    RUN_FILE,
    TOKENIZER_DIRECTORY,
    TORCH_HEAD_FILE,
    read_json,
    require_run_directory,
)
from review_toolkit.runs.ensemble_run import is_ensemble, load_ensemble
from review_toolkit.runs.manifest import refuse_unpickling, safetensors_problem, verify_run_directory
from review_toolkit.runtime import distributed
from review_toolkit.runtime.quiet import quiet_call

if TYPE_CHECKING:
    import torch


def load_run(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    allow_unverified: bool = False,
    trust_remote_code: bool = False,
    backend: str = "auto",
) -> Classifier | EnsembleClassifier:
    """The classifier a run directory describes, ready to ``predict``.

    An ensemble's run directory (see :mod:`review_toolkit.runs.ensemble_run`) gives an
    :class:`~review_toolkit.inference.ensemble.EnsembleClassifier` with the same interface.

    Base weights come from the checkpoint the run recorded (hub id or local
    path); what training changed comes from the run directory. Nothing stored
    in the run is executed: the run's manifest is verified before anything is
    read (``allow_unverified=True`` tolerates a mismatch, with a warning), no
    file of the run is ever unpickled, and model code shipped with a checkpoint
    runs only when the caller passes ``trust_remote_code=True``; a run's own
    config cannot switch that on. See :mod:`review_toolkit.runs.manifest`.

    ``backend`` chooses what embeds: "torch" (the PyTorch encoder), "onnx" (the run's ONNX
    export, ``review-toolkit export --format onnx``, through ONNX Runtime on the CPU) or "auto":
    the export when the run has one and scoring happens on the CPU, else torch. The classifier's
    ``scored_with`` says which ran, in what precision.
    """
    if backend not in BACKENDS:
        raise ReviewToolkitError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}.")
    run = require_run_directory(path)
    verify_run_directory(run, allow_unverified=allow_unverified)
    ensemble = _ensemble_info(run)
    if ensemble is not None:  # members are loaded (and verified) as runs of their own
        return load_ensemble(
            run,
            ensemble,
            lambda member: load_run(
                member, device=device, allow_unverified=allow_unverified, trust_remote_code=trust_remote_code,
                backend=backend,
            ),
            _threshold(run, ensemble),
        )
    steps = _LoadSteps(run)
    with refuse_unpickling(run), quiet_call():  # no weight-loading bars or hub notices from a library call
        try:
            return _load_verified_run(run, steps, device=device, trust_remote_code=trust_remote_code, backend=backend)
        except ReviewToolkitError:
            raise
        except OSError as error:
            if error.errno is not None:
                raise  # the operating system's own message names the file (see runtime.os_errors)
            raise _refusal(run, steps, error, allow_unverified) from error
        except Exception as error:
            raise _refusal(run, steps, error, allow_unverified) from error


def _refusal(run: Path, steps: "_LoadSteps", error: BaseException, allow_unverified: bool) -> RunDirectoryError:
    """One line for whatever a library made of a file of the run.

    A run that matches its manifest can still have been written by someone else (a manifest proves
    integrity, not origin), so any file may be hostile: say which one was refused, and why.
    """
    if isinstance(error, pickle.UnpicklingError):  # torch's weights-only loader refused a pickle
        first_line = "a pickle holding more than tensors; nothing in it was run"
    else:
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
    unverified = " (unverified)" if allow_unverified else ""
    return RunDirectoryError(
        f"Cannot load the run {run}{unverified}: {steps.current} was refused ({type(error).__name__}: "
        f"{first_line[:300]}). Copy the run again from where it was trained, or train it again."
    )


class _LoadSteps:
    """What load_run is reading, so that a failure names it."""

    def __init__(self, run: Path):
        self.run = run
        self.current = "its files"

    def file(self, name: str) -> Path:
        """``run / name``, noted as what is being read."""
        self.current = str(self.run / name)
        return self.run / name

    def step(self, description: str) -> None:
        self.current = description


def _on_cpu(device: Any) -> bool:
    """Whether scoring happens on the CPU, without importing torch where no GPU driver is present."""
    if device is not None:
        return str(device).split(":")[0] == "cpu"
    if distributed.launched():
        return False  # one device per process of a launch: the launcher's, through torch
    if "torch" not in sys.modules and sys.platform.startswith("linux"):
        # No NVIDIA or AMD driver: torch could not find a GPU either, so spare importing it.
        nvidia = Path("/proc/driver/nvidia/gpus")
        if not (nvidia.is_dir() and any(nvidia.iterdir())) and not Path("/dev/kfd").exists():
            return True
    import torch

    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def choose_backend(run: Path, requested: str, device: Any, export: dict[str, Any] | None) -> str:
    """"onnx" or "torch" for ``requested`` ("auto", "torch" or "onnx"); refuses an impossible "onnx"."""
    if requested == "torch":
        return "torch"
    if requested == "onnx":
        if export is None:
            raise RunDirectoryError(
                f"{run} has no ONNX export ({run / 'onnx' / 'export.json'}). Write one with "
                f"'review-toolkit export --run {run} --format onnx', or score with --backend torch."
            )
        require_onnxruntime("--backend onnx")
        if not _on_cpu(device):
            raise ReviewToolkitError(
                f"The ONNX backend scores on the CPU, not on {device}. Pass --device cpu, or --backend torch."
            )
        return "onnx"
    return "onnx" if export is not None and onnxruntime_available() and _on_cpu(device) else "torch"


def _load_verified_run(
    run: Path, steps: _LoadSteps, *, device: str | torch.device | None, trust_remote_code: bool, backend: str = "auto"
) -> Classifier:
    for path in sorted(run.rglob("*.safetensors")):  # a damaged or disguised one is named, not half-read
        if CHECKPOINT_DIRECTORY not in path.relative_to(run).parts[:1]:
            reason = safetensors_problem(path)
            if reason is not None:
                raise RunDirectoryError(
                    f"Cannot load the run {run}: {path} is not a valid safetensors file ({reason}). Copy the run "
                    "again from where it was trained, or train it again."
                )
    info = read_json(steps.file(RUN_FILE))
    if not isinstance(info, dict):
        raise RunDirectoryError(f"Cannot load the run {run}: {run / RUN_FILE} is not a JSON object.")
    config = TrainConfig.from_mapping(_read_yaml(steps.file(CONFIG_FILE)), source=str(run / CONFIG_FILE))
    if config.trust_remote_code and not trust_remote_code:
        raise RunDirectoryError(
            f"{run} was trained with --trust-remote-code: loading it runs Python code that comes with the "
            f"checkpoint {config.model!r}. A run's own settings cannot allow that; if you trust that code, "
            "pass trust_remote_code=True to load_run (--trust-remote-code where a command offers it)."
        )
    steps.step(f"the plugins named in {run / RUN_FILE}")
    # The options the run was trained with (config.yaml records every declared one).
    backbone, _ = registry.get("backbone", info["backbone"], config.backbone_options)
    method, _ = registry.get("method", info["method"], config.method_options)
    head, _ = registry.get("head", info["head"], config.head_options)
    if hasattr(backbone, "trust_remote_code"):
        backbone.trust_remote_code = trust_remote_code
    steps.step(f"the checkpoint {config.model!r} named in {run / CONFIG_FILE}")
    checkpoint = backbone.resolve_checkpoint(config.model)
    tokenizer, encoder, featurizer = None, None, None
    export = None if isinstance(backbone, FeaturizerBackbone) else read_export(run)
    if isinstance(backbone, FeaturizerBackbone):
        if backend == "onnx":
            raise RunDirectoryError(f"{run} scores with a featurizer ({info['backbone']}), which has no ONNX export; use --backend torch.")
        featurizer = backbone.load_featurizer(steps.file(FEATURIZER_DIRECTORY), checkpoint=checkpoint)
        head_device: Any = _target_device(device)
    elif choose_backend(run, backend, device, export) == "onnx":
        steps.step(f"the ONNX export in {steps.file('onnx')}")
        encoder, tokenizer = load_onnx_encoder(run, export, int(info["max_length"]))
        head_device = "cpu"
    else:
        from transformers import AutoTokenizer

        from review_toolkit.accel.gpu_scoring import keep_linear_weights_in_bf16, scores_in_bf16

        target = _target_device(device)
        with quiet_call():  # transformers is imported now: its weight-loading bars can be turned off
            tokenizer = AutoTokenizer.from_pretrained(steps.file(TOKENIZER_DIRECTORY), trust_remote_code=trust_remote_code)
            steps.step(f"the checkpoint {checkpoint!r} named in {run / CONFIG_FILE}, with the run's {method.name} weights")
            encoder = method.load_trained(backbone, checkpoint, run, config)
        if not method.quantized:  # a quantized encoder is placed by its device map
            encoder.to(target)
            if scores_in_bf16(target):
                keep_linear_weights_in_bf16(encoder)  # it only ever computes in bf16 there
        encoder.eval()
        head_device = next(p.device for p in encoder.parameters())
    if isinstance(head, FittedHead):
        steps.step(f"the fitted head's state in {run}")
        scorer: Any = head.load(run)
    else:
        from safetensors.torch import load_file

        scorer = build_head(head, info["embedding_size"], len(info["label_names"]))
        scorer.load_state_dict(load_file(str(steps.file(TORCH_HEAD_FILE))))
        scorer.to(head_device).eval()
    steps.step(f"the settings in {run / RUN_FILE}")
    threshold = _threshold(run, info)
    return Classifier(
        backbone=backbone,
        tokenizer=tokenizer,
        encoder=encoder,
        featurizer=featurizer,
        head=scorer,
        max_length=info["max_length"],
        threshold=threshold,
        info=info,
        head_description=registry.describe(head),
    )


def _threshold(run: Path, info: dict[str, Any]) -> float:
    threshold = info.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise RunDirectoryError(
            f"Cannot load the run {run}: the threshold in {run / RUN_FILE} is {threshold!r}, not a number in [0, 1]. "
            "Set one with 'review-toolkit evaluate --threshold', or train the run again."
        )
    return float(threshold)


def _ensemble_info(run: Path) -> dict[str, Any] | None:
    """run.json of an ensemble, or None for any other run (whose run.json the usual path reads and checks)."""
    try:
        info = read_json(run / RUN_FILE)
    except Exception:  # unreadable, not JSON, nested too deep: the usual path names the problem
        return None
    return info if is_ensemble(info) else None


def _target_device(device: Any) -> Any:
    import torch

    return torch.device(device) if device is not None else distributed.device()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
