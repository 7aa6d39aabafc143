"""A run's trained encoder loads with Hugging Face libraries alone, and names no path of this machine.

Trained through the CLI as a user would; the checks load the run's files with transformers and PEFT
only, pool by mean as the toolkit does, and compare with ``load_run(...).embed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from review_toolkit import load_run
from review_toolkit.cli import cli
from review_toolkit.runs.manifest import check_run_integrity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "Great product, works exactly as described and arrived early.",
    "Terrible. Broke after one day!!! Never buying from them again",
    "ok",
]
MAX_LENGTH = 32


def train_run(tiny_bert: str, small_reviews: Path, run: Path, method: str) -> Path:
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", method, "--head", "linear",
        "--data", str(small_reviews), "--output-dir", str(run), "--max-length", str(MAX_LENGTH),
        "--epochs", "1", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def mean_pooled(model, tokenizer, texts: list[str]) -> np.ndarray:
    """What a user writes: tokenizer, model, masked mean of the last hidden states."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch)[0]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return ((hidden * mask).sum(dim=1) / mask.sum(dim=1)).numpy()


def assert_no_machine_paths(run: Path, *machine_paths: str) -> None:
    """No file of the run (checkpoints included) names the staging folder or an absolute local path."""
    for path in run.rglob("*"):
        if path.suffix in (".json", ".md", ".jsonl") and path.is_file():
            text = path.read_text(encoding="utf-8")
            assert ".partial" not in text, path
            if path.name != "run.json":  # run.json records where the checkpoint was loaded from
                for machine_path in machine_paths:
                    assert machine_path not in text, path


def test_full_run_encoder_loads_with_transformers_alone(tiny_bert, small_reviews, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    run = train_run(tiny_bert, small_reviews, tmp_path / "run", "full")
    encoder = run / "encoder"
    model = AutoModel.from_pretrained(encoder).eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    expected = load_run(run).embed(TEXTS)
    np.testing.assert_allclose(mean_pooled(model, tokenizer, TEXTS), expected, rtol=0, atol=1e-5)
    # Fine-tuned: not the base checkpoint's vectors.
    base = AutoModel.from_pretrained(tiny_bert).eval()
    assert not np.allclose(mean_pooled(base, tokenizer, TEXTS), expected, atol=1e-5)
    pooling = json.loads((encoder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True
    assert not (run / "encoder.safetensors").exists()
    assert check_run_integrity(run) == []  # the manifest covers the folder
    assert_no_machine_paths(run, str(tmp_path), tiny_bert)


def test_lora_run_adapter_loads_with_peft_on_its_base(tiny_bert, small_reviews, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    run = train_run(tiny_bert, small_reviews, tmp_path / "run", "lora")
    adapter = run / "adapter"
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    np.testing.assert_allclose(mean_pooled(model, tokenizer, TEXTS), load_run(run).embed(TEXTS), rtol=0, atol=1e-5)

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not Path(base).is_absolute()
    assert (adapter / base).resolve() == Path(tiny_bert).resolve()  # relative to the adapter folder
    readme = (adapter / "README.md").read_text()
    assert "More Information Needed" not in readme and base in readme
    assert_no_machine_paths(run, str(tmp_path), tiny_bert)


def test_lora_run_loads_without_the_adapters_base_field(tiny_bert, small_reviews, tmp_path):
    """load_run rebuilds from the run's own config: the field is for other tools, not read back."""
    run = train_run(tiny_bert, small_reviews, tmp_path / "run", "lora")
    expected = load_run(run).predict_proba(TEXTS)
    config_file = run / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "no-such/model"
    config_file.write_text(json.dumps(config))
    np.testing.assert_array_equal(load_run(run, allow_unverified=True).predict_proba(TEXTS), expected)


def test_bundled_minilm_is_named_by_its_hub_id(minilm_path, tmp_path):
    """The default MiniLM checkpoint is a copy inside site-packages: the run names the Hub id instead."""
    from review_toolkit import registry

    backbone, _ = registry.get("backbone", "minilm")
    assert backbone.hub_id(backbone.resolve_checkpoint(None)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert backbone.hub_id(minilm_path) == "sentence-transformers/all-MiniLM-L6-v2"
    assert backbone.hub_id(str(tmp_path)) is None
