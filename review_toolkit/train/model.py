"""The composed classifier: encoder + pooling + head in one module.

One module for every backbone means adapters, projection and head are
trained, saved and reloaded together, whatever the method.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    weight = class_weights.to(logits.device) if class_weights is not None else None
    return nn.functional.cross_entropy(logits.float(), labels, weight=weight)


class ReviewClassifierModel(nn.Module):
    """Token ids to class logits: ``head(encoder(input_ids, attention_mask))``, or from packed reviews."""

    # The loss is a per-batch mean: Trainer must scale it for gradient accumulation itself
    # (and need not count label tokens, a device sync, every step).
    accepts_loss_kwargs = False

    def __init__(self, encoder: nn.Module, head: nn.Module, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.class_weights = class_weights
        self.listed_modules: list[nn.Module] | None = None  # as of the last walk of ``train``
        # Set for training through CUDA graphs (review_toolkit.accel.graphs.GraphedEncoder); not a submodule.
        self.graphed_encoder = None

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
        position_ids: torch.Tensor | None = None,
        cu_seq_lens: torch.Tensor | None = None,
        max_length: int | None = None,
        review_index: torch.Tensor | None = None,
        reviews: int | None = None,
        **unused: torch.Tensor,  # e.g. the "length" column used for length-grouped batches
    ) -> SequenceClassifierOutput:
        if cu_seq_lens is not None:  # reviews packed into one row (review_toolkit.accel.packing)
            pooled = None
            if self.graphed_encoder is not None and self.training and torch.is_grad_enabled():
                pooled = self.graphed_encoder(input_ids, position_ids, cu_seq_lens, review_index, max_length)
            if pooled is not None:
                pooled = pooled[:reviews]  # the layout's empty review slots are left out
            else:
                pooled = self.encoder(
                    input_ids=input_ids, position_ids=position_ids, cu_seq_lens=cu_seq_lens, max_length=max_length,
                    review_index=review_index, reviews=reviews,
                )
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
