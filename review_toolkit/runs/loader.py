"""Loading a run directory back into a classifier, without executing anything stored in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from review_toolkit import registry
from review_toolkit.config import TrainConfig
from review_toolkit.errors import ReviewToolkitError, RunDirectoryError
from review_toolkit.inference.classifier import Classifier
from review_toolkit.plugin_api.contracts import FeaturizerBackbone, FittedHead
from review_toolkit.runs.layout import (
    CONFIG_FILE,
    FEATURIZER_DIRECTORY,
    RUN_FILE,
    TOKENIZER_DIRECTORY,
    TORCH_HEAD_FILE,
    read_json,
    require_run_directory,
)
from review_toolkit.runs.manifest import refuse_unpickling, verify_run_directory
from review_toolkit.runtime import distributed


def load_run(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    allow_unverified: bool = False,
    trust_remote_code: bool = False,
) -> Classifier:
    """The classifier a run directory describes, ready to ``predict``.

    Base weights come from the checkpoint the run recorded (hub id or local
    path); what training changed comes from the run directory. Nothing stored
    in the run is executed: the run's manifest is verified before anything is
    read (``allow_unverified=True`` tolerates a mismatch, with a warning), no
    file of the run is ever unpickled, and model code shipped with a checkpoint
    runs only when the caller passes ``trust_remote_code=True``; a run's own
    config cannot switch that on. See :mod:`review_toolkit.runs.manifest`.
    """
    run = require_run_directory(path)
    verify_run_directory(run, allow_unverified=allow_unverified)
    with refuse_unpickling(run):
        if not allow_unverified:
            return _load_verified_run(run, device=device, trust_remote_code=trust_remote_code)
        try:
            return _load_verified_run(run, device=device, trust_remote_code=trust_remote_code)
        except ReviewToolkitError:
            raise
        except Exception as error:  # unverified files: a damaged one is the likely cause
            first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise RunDirectoryError(
                f"Cannot load the unverified run {run}: {type(error).__name__}: {first_line}"
            ) from error


def _load_verified_run(run: Path, *, device: str | torch.device | None, trust_remote_code: bool) -> Classifier:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = read_json(run / RUN_FILE)
    config = TrainConfig.from_mapping(_read_yaml(run / CONFIG_FILE), source=str(run / CONFIG_FILE))
    if config.trust_remote_code and not trust_remote_code:
        raise RunDirectoryError(
            f"{run} was trained with --trust-remote-code: loading it runs Python code that comes with the "
            f"checkpoint {config.model!r}. A run's own settings cannot allow that; if you trust that code, "
            "pass trust_remote_code=True to load_run (--trust-remote-code where a command offers it)."
        )
    # The options the run was trained with (config.yaml records every declared one).
    backbone, _ = registry.get("backbone", info["backbone"], config.backbone_options)
    method, _ = registry.get("method", info["method"], config.method_options)
    head, _ = registry.get("head", info["head"], config.head_options)
    if hasattr(backbone, "trust_remote_code"):
        backbone.trust_remote_code = trust_remote_code
    checkpoint = backbone.resolve_checkpoint(config.model)
    target = torch.device(device) if device is not None else distributed.device()
    tokenizer, encoder, featurizer = None, None, None
    if isinstance(backbone, FeaturizerBackbone):
        featurizer = backbone.load_featurizer(run / FEATURIZER_DIRECTORY, checkpoint=checkpoint)
        head_device = target
    else:
        tokenizer = AutoTokenizer.from_pretrained(run / TOKENIZER_DIRECTORY, trust_remote_code=trust_remote_code)
        encoder = method.load_trained(backbone, checkpoint, run, config)
        if not method.quantized:  # a quantized encoder is placed by its device map
            encoder.to(target)
        encoder.eval()
        head_device = next(p.device for p in encoder.parameters())
    if isinstance(head, FittedHead):
        scorer: Any = head.load(run)
    else:
        scorer = head.build(info["embedding_size"], len(info["label_names"]))
        scorer.load_state_dict(load_file(str(run / TORCH_HEAD_FILE)))
        scorer.to(head_device).eval()
    return Classifier(
        backbone=backbone,
        tokenizer=tokenizer,
        encoder=encoder,
        featurizer=featurizer,
        head=scorer,
        max_length=info["max_length"],
        threshold=info.get("threshold", 0.5),
        info=info,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
