"""The composed classifier: encoder + pooling + head in one module.

One module for every backbone means adapters, projection and head are
trained, saved and reloaded together, whatever the method.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    weight = class_weights.to(logits.device) if class_weights is not None else None
    return nn.functional.cross_entropy(logits.float(), labels, weight=weight)


class ReviewClassifierModel(nn.Module):
    """Token ids to class logits: ``head(encoder(input_ids, attention_mask))``.

    Batches of another form (set up by ``review_toolkit.accel.plan``) are encoded by
    ``batch_encoder``, called with the encoder and the batch's inputs.
    """

    # The loss is a per-batch mean: Trainer must scale it for gradient accumulation itself
    # (and need not count label tokens, a device sync, every step).
    accepts_loss_kwargs = False

    def __init__(self, encoder: nn.Module, head: nn.Module, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.class_weights = class_weights
        self.listed_modules: list[nn.Module] | None = None  # as of the last walk of ``train``
        # Not a submodule: the encoder's weights keep their names whatever encodes the batches.
        self.batch_encoder: Callable[..., torch.Tensor] | None = None

    def train(self, mode: bool = True) -> ReviewClassifierModel:
        """``nn.Module.train``, without the walk when every module is in ``mode`` already.

        Trainer calls ``train()`` before every step. Under PEFT the walk sets the flag on well
        over a thousand modules, milliseconds of host time on steps that wait on the host;
        checking the modules listed at the last walk takes a fraction of one.
        """
        if self.listed_modules is not None and all(module.training == mode for module in self.listed_modules):
            return self
        super().train(mode)
        self.listed_modules = list(self.modules())
        return self

    @property
    def _no_split_modules(self) -> list[str]:
        """The encoder's layer classes, as its transformers model lists them (e.g. BertLayer, T5Block).

        accelerate's transformer-based auto wrap reads this when a launch config names no layer
        classes: FSDP then shards each such layer as one unit, whatever the backbone.
        """
        present = {type(module).__name__ for module in self.encoder.modules()}
        listed = {name for module in self.encoder.modules() for name in getattr(module, "_no_split_modules", None) or ()}
        return sorted(listed & present)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **batch: Any,  # the collator's other fields, e.g. the "length" column of length-grouped batches
    ) -> SequenceClassifierOutput:
        if self.batch_encoder is not None:
            pooled = self.batch_encoder(self.encoder, input_ids=input_ids, attention_mask=attention_mask, **batch)
        else:
            pooled = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        head_weight = next(self.head.parameters())
        logits = self.head(pooled.to(head_weight.dtype))
        loss = classification_loss(logits, labels, self.class_weights) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class HeadOnlyModel(nn.Module):
    """A torch head trained on precomputed (frozen) embeddings."""

    accepts_loss_kwargs = False

    def __init__(self, head: nn.Module, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.head = head
        self.class_weights = class_weights

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, **unused) -> SequenceClassifierOutput:
        logits = self.head(features)
        loss = classification_loss(logits, labels, self.class_weights) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def balanced_class_weights(labels, num_labels: int = 2) -> torch.Tensor:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count)."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_labels).float().clamp(min=1)
    return counts.sum() / (num_labels * counts)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
