"""The composed classifier's own behaviour outside training runs."""

from __future__ import annotations

import torch
from transformers import BertModel

from review_toolkit.plugin_api.encoders import PooledEncoder
from review_toolkit.train.model import ReviewClassifierModel


def test_train_mode_reaches_every_module_after_parts_were_switched(tiny_bert):
    model = ReviewClassifierModel(PooledEncoder(BertModel.from_pretrained(tiny_bert), 64), torch.nn.Linear(64, 2))
    model.train()
    assert all(module.training for module in model.modules())
    # Trainer calls train() before every step; a part switched to eval in between must come back.
    model.encoder.transformer.encoder.layer[1].attention.eval()
    model.train()
    assert all(module.training for module in model.modules())
    model.eval()
    assert not any(module.training for module in model.modules())
    model.train()
    assert all(module.training for module in model.modules())
