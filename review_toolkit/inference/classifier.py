"""A trained classifier in memory: texts in, P(fake) out.

The same object scores the test split right after training and serves
predictions after ``load_run``, so what was measured is what is served.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from review_toolkit.inference.calibration import Calibration
from review_toolkit.data import LABEL_NAMES
from review_toolkit.inference.head_outputs import check_logits, checked_probabilities, require_scores
from review_toolkit.errors import ConfigError, PluginError
from review_toolkit.plugin_api.contracts import Backbone, Featurizer, FittedModel

if TYPE_CHECKING:
    from torch import nn

    from review_toolkit.accel.gpu_scoring import QueuedWork


def _is_torch_module(value: Any) -> bool:
    """Whether ``value`` is a torch module, without importing torch (an ONNX-scored run never does)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def featurize(featurizer: Featurizer, texts: list[str]) -> np.ndarray:
    """A featurizer's vectors as a dense float32 array, checked: training and serving share this path."""
    features = featurizer.transform(list(texts))
    if hasattr(features, "toarray"):  # scipy sparse
        features = features.toarray()
    features = np.asarray(features, dtype=np.float32)
    if features.shape != (len(texts), featurizer.embedding_size):
        raise PluginError(
            f"{type(featurizer).__name__}.transform returned shape {features.shape} for {len(texts)} texts; "
            f"the contract is [{len(texts)}, embedding_size={featurizer.embedding_size}]."
        )
    return features


@dataclass
class Prediction:
    label: str
    p_fake: float


class Classifier:
    """Scores reviews with an encoder and either a torch head or a fitted model.

    ``calibration`` (fitted on the validation split, stored in run.json) maps the head's
    probabilities to calibrated ones (it defaults to what ``info``, i.e. run.json, records);
    ``threshold`` applies to the calibrated P(fake).

    ``encoder`` is a torch module (with its Hugging Face tokenizer) or, on the ONNX backend, an
    :class:`~review_toolkit.inference.onnx_backend.OnnxEncoder` with its ``TokenIds``;
    ``scored_with`` says which, and in what precision ("torch float32", "onnx int8").
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        tokenizer: Any = None,
        encoder: nn.Module | Any | None = None,
        head: nn.Module | FittedModel,
        max_length: int,
        threshold: float = 0.5,
        info: dict[str, Any] | None = None,
        calibration: Calibration | dict[str, Any] | None = None,
        featurizer: Featurizer | None = None,
        head_description: str = "head",
    ):
        if featurizer is None and encoder is None:
            raise ValueError("Classifier needs an encoder (with its tokenizer) or a fitted featurizer.")
        self.backbone = backbone
        self.featurizer = featurizer
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.head = head
        self.head_description = head_description  # names the plugin in errors about its outputs
        self.max_length = max_length
        self.threshold = threshold
        self.info = info or {}
        if calibration is None:
            calibration = self.info.get("calibration")
        self.calibration = calibration if isinstance(calibration, Calibration) else Calibration.from_dict(calibration)

    @property
    def backend(self) -> str:
        """"onnx" when an ONNX Runtime session embeds, "torch" for a torch encoder, else the featurizer's."""
        if self.featurizer is not None:
            return "featurizer"
        return getattr(self.encoder, "backend", "torch")

    @property
    def scored_with(self) -> str:
        """Backend and precision of the encoder, as reports and model cards name them."""
        if self.featurizer is not None:
            return f"featurizer ({type(self.featurizer).__name__})"
        if self.backend == "onnx":
            return f"onnx {self.encoder.precision}"
        parameters = list(self.encoder.parameters())
        dtypes = {str(parameter.dtype).replace("torch.", "") for parameter in parameters}
        floating = "/".join(sorted(d for d in dtypes if d.startswith(("float", "bfloat")))) or "float32"
        quantized = ", 4-bit base weights" if any(d.startswith(("int", "uint")) for d in dtypes) else ""
        device = parameters[0].device if parameters else None
        if device is not None and device.type == "cuda":
            from review_toolkit.accel.gpu_scoring import scores_in_bf16

            if scores_in_bf16(device):  # embed_texts runs under bf16 autocast there
                return f"torch {floating} weights, bfloat16 autocast (cuda){quantized}"
        return f"torch {floating} ({device.type if device is not None else 'cpu'}){quantized}"

    @property
    def embedding_size(self) -> int:
        return (self.featurizer if self.featurizer is not None else self.encoder).embedding_size

    def compile_encoder(self) -> int:
        """Compile the encoder's layers for scoring on a GPU (``predict --compile``); returns how many.

        Pays for large inputs and servers: the first batches compile, later ones run faster.
        """
        if self.encoder is None:
            raise ConfigError(f"compile: the {self.backbone.name!r} backbone has no neural encoder to compile.")
        from review_toolkit.accel.compilation import compile_for_scoring

        return compile_for_scoring(self.encoder)

    def record_scoring_graphs(self, lanes: int = 1) -> int:
        """Record the CUDA graphs that small batches on a GPU replay, now rather than at the first
        batch that needs each (a server does before it reports ready), on each of the ``lanes``
        CUDA streams that batches scored at once share (``accel.scoring_lanes``); returns how many
        there are per stream, 0 where scoring uses none (CPUs, ONNX, encoders that do not pack)."""
        if self.featurizer is not None or self.backend != "torch":
            return 0
        from review_toolkit.accel.gpu_scoring import record_scoring_graphs
        from review_toolkit.inference.embeddings import model_device

        return record_scoring_graphs(self.encoder, model_device(self.encoder), lanes=lanes)

    def token_ids(self, texts: list[str]) -> list[list[int]] | None:
        """The token ids ``embed`` computes ``texts`` from (prepared and truncated as in training);
        None for a featurizer backbone, which has no tokens. Given back to ``embed`` (a server
        counts each request's tokens with them), they are not computed twice."""
        if self.featurizer is not None:
            return None
        prepared = self.backbone.prepare_texts(list(texts))
        if self.backend == "onnx":
            return self.tokenizer(prepared)["input_ids"]
        from review_toolkit.inference.token_ids import token_id_encoder

        return token_id_encoder(self.tokenizer, self.max_length)(prepared)

    def portable_token_ids(self) -> dict[str, Any] | None:
        """What lets another process compute ``token_ids`` without this model or transformers
        (:func:`review_toolkit.inference.token_ids.portable_token_ids`); None for featurizer
        backbones, the ONNX backend and backbones that prepare texts before tokenizing."""
        if self.featurizer is not None or self.backend != "torch":
            return None
        if type(self.backbone).prepare_texts is not Backbone.prepare_texts:
            return None
        from review_toolkit.inference.token_ids import portable_token_ids

        return portable_token_ids(self.tokenizer, self.max_length)

    def embed(
        self, texts: list[str], *, batch_size: int = 64, progress: bool = False, token_ids: list[list[int]] | None = None
    ) -> np.ndarray:
        """Vectors of ``texts`` in input order; ``token_ids``: what ``self.token_ids(texts)`` returned."""
        if self.featurizer is not None:
            return featurize(self.featurizer, self.backbone.prepare_texts(list(texts)))
        if token_ids is not None and len(token_ids) != len(texts):
            raise ValueError(f"{len(token_ids)} token id lists for {len(texts)} texts")
        if self.backend == "onnx":
            from review_toolkit.inference.onnx_backend import embed_texts_onnx

            return embed_texts_onnx(
                self.encoder, self.tokenizer, self.backbone.prepare_texts(list(texts)), batch_size=batch_size,
                progress=progress, token_ids=token_ids,
            )
        from review_toolkit.inference.embeddings import embed_texts

        return embed_texts(
            self.encoder,
            self.tokenizer,
            self.backbone.prepare_texts(list(texts)),
            max_length=self.max_length,
            batch_size=batch_size,
            progress=progress,
            token_ids=token_ids,
        )

    def p_fake_from_embeddings(self, features: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        raw = self._raw_p_fake(features)
        if not calibrated:
            return raw
        p_fake = self.calibration.apply(raw)
        require_scores(p_fake, f"{self.head_description} with its calibration")
        return p_fake

    def _raw_p_fake(self, features: np.ndarray) -> np.ndarray:
        if _is_torch_module(self.head):
            import torch

            self.head.eval()
            weight = next(self.head.parameters())
            with torch.inference_mode():
                logits = self.head(torch.as_tensor(features, device=weight.device, dtype=weight.dtype))
                check_logits(logits, len(features), len(LABEL_NAMES), self.head_description)
                p_fake = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy().astype(np.float64)
            require_scores(p_fake, self.head_description)
            return p_fake
        probabilities = checked_probabilities(self.head.predict_proba(features), len(features), self.head_description)
        return probabilities[:, 1]

    def predict_proba(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        progress: bool = False,
        calibrated: bool = True,
        token_ids: list[list[int]] | None = None,
    ) -> np.ndarray:
        """P(fake) for each text, in input order (calibrated unless ``calibrated=False``);
        ``token_ids``: what ``self.token_ids(texts)`` returned, if already at hand."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        features = self.embed(texts, batch_size=batch_size, progress=progress, token_ids=token_ids)
        return self.p_fake_from_embeddings(features, calibrated=calibrated)

    def queue_proba(self, texts: list[str], *, token_ids: list[list[int]], calibrated: bool = True) -> QueuedWork | None:
        """``predict_proba`` of already tokenized reviews, queued where that costs the calling
        thread little: their work is queued on the GPU now (one row replayed from a recorded
        graph, ``inference.embeddings.queue_embedding``); ``wait()`` for it in any thread, then its
        ``result()`` applies the head. None where the work cannot be queued so cheaply (a CPU, a
        large batch, an ONNX or featurizer backbone): use ``predict_proba``."""
        if self.featurizer is not None or self.backend != "torch" or len(token_ids) != len(texts):
            return None
        from review_toolkit.inference.embeddings import queue_embedding

        vectors = queue_embedding(self.encoder, self.tokenizer, token_ids)
        if vectors is None:
            return None
        return vectors.then(lambda embeddings: self.p_fake_from_embeddings(embeddings, calibrated=calibrated))

    def labels_for(self, p_fake: np.ndarray) -> list[str]:
        return [LABEL_NAMES[int(p >= self.threshold)] for p in p_fake]

    def predict(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> list[Prediction]:
        """Label and P(fake) for each text, in input order."""
        p_fake = self.predict_proba(texts, batch_size=batch_size, progress=progress)
        return [Prediction(label, float(p)) for label, p in zip(self.labels_for(p_fake), p_fake)]
