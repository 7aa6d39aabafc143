"""A trained classifier in memory: texts in, P(fake) out.

The same object scores the test split right after training and serves
predictions after ``load_run``, so what was measured is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from review_toolkit.data import LABEL_NAMES
from review_toolkit.embeddings import embed_texts
from review_toolkit.plugin_api import Backbone, FittedModel


@dataclass
class Prediction:
    label: str
    p_fake: float


class Classifier:
    """Scores reviews with an encoder and either a torch head or a fitted model."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        tokenizer: Any,
        encoder: nn.Module,
        head: nn.Module | FittedModel,
        max_length: int,
        threshold: float = 0.5,
        info: dict[str, Any] | None = None,
    ):
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.head = head
        self.max_length = max_length
        self.threshold = threshold
        self.info = info or {}

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return embed_texts(
            self.encoder,
            self.tokenizer,
            self.backbone.prepare_texts(list(texts)),
            max_length=self.max_length,
            batch_size=batch_size,
            progress=progress,
        )

    def p_fake_from_embeddings(self, features: np.ndarray) -> np.ndarray:
        if isinstance(self.head, nn.Module):
            self.head.eval()
            weight = next(self.head.parameters())
            with torch.inference_mode():
                logits = self.head(torch.as_tensor(features, device=weight.device, dtype=weight.dtype))
                return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy().astype(np.float64)
        return self.head.predict_proba(features)[:, 1]

    def predict_proba(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """P(fake) for each text, in input order."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return self.p_fake_from_embeddings(self.embed(texts, batch_size=batch_size, progress=progress))

    def labels_for(self, p_fake: np.ndarray) -> list[str]:
        return [LABEL_NAMES[int(p >= self.threshold)] for p in p_fake]

    def predict(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> list[Prediction]:
        """Label and P(fake) for each text, in input order."""
        p_fake = self.predict_proba(texts, batch_size=batch_size, progress=progress)
        return [Prediction(label, float(p)) for label, p in zip(self.labels_for(p_fake), p_fake)]
