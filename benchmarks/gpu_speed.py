"""Training and inference speed on one GPU: the toolkit against the research recipe and a plain loop.

Random-init models of the real architectures' sizes (no hub needed): Stella
(native gte, 24 x 1024, 2_Dense_1024 projection) and FLAN-T5-large. Real
review texts, tokenized, so lengths follow the data (mean ~81 tokens). For
each architecture and method (full, lora, qlora), these rows:

  toolkit  the toolkit's `train` (library API, benchmarks/timed_train.py) with its defaults, one epoch
  throughput  the same with examples/gpu_throughput.yaml (large token-budget batches), one epoch
  compiled    the same with examples/gpu_compiled.yaml (large batches, compiled layers), three
              epochs, timed in the last two (the first compiles)
  recipe   the research recipe through the toolkit: pad to 512, batch 2 x 8,
           paged_adamw_8bit, cosine (examples/research_recipe.yaml), 100 steps
  plain    a plain PyTorch + PEFT loop (as ../shared/bench/gpu_baseline.py):
           bf16 model, random batches of 32 padded to their longest review

and inference: the toolkit's `load_run(...).predict_proba` against a
transformers `pipeline("text-classification")` at batch sizes 32 and 128.

    python3 benchmarks/gpu_speed.py --data fake_reviews.csv --tokenizer DIR --out OUT

Reports samples/s (the toolkit rows: steady-state optimizer steps, evaluation and
checkpoints left out, as the plain loop is timed; the run's own figure beside it),
MFU (model FLOPs on real, unpadded tokens over measured bf16 peak), peak GPU memory;
writes OUT/gpu_speed.json and OUT/gpu_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "examples" / "research_recipe.yaml"
THROUGHPUT = HERE.parent / "examples" / "gpu_throughput.yaml"
COMPILED = HERE.parent / "examples" / "gpu_compiled.yaml"
PRESET_ROWS = {None: "toolkit", RECIPE: "recipe", THROUGHPUT: "throughput", COMPILED: "compiled"}


def measure_peak_bf16() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - started)


# --------------------------------------------------------------------------- random-init checkpoints


def stella_config():
    from transformers import GteConfig

    return GteConfig(
        vocab_size=30528, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, max_position_embeddings=8192, rope_theta=160000.0,
    )


def save_stella(directory: Path, tokenizer) -> int:
    """A random-init Stella in its sentence-transformers layout; returns the encoder's parameter count."""
    from safetensors.torch import save_file
    from transformers import GteModel

    model = GteModel(stella_config())
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 1024, "pooling_mode_mean_tokens": True}))
    dense = torch.nn.Linear(1024, 1024)
    (directory / "2_Dense_1024").mkdir(exist_ok=True)
    (directory / "2_Dense_1024" / "config.json").write_text(
        json.dumps({"in_features": 1024, "out_features": 1024, "bias": True, "activation_function": "torch.nn.modules.linear.Identity"})
    )
    save_file({"linear.weight": dense.weight.data, "linear.bias": dense.bias.data}, str(directory / "2_Dense_1024" / "model.safetensors"))
    return sum(p.numel() for p in model.parameters()) + 1024 * 1025


def t5_config():
    from transformers import T5Config

    config = T5Config(
        d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16,
        vocab_size=32128, feed_forward_proj="gated-gelu", is_gated_act=True, tie_word_embeddings=False,
    )
    config.pad_token_id = 0
    config.decoder_start_token_id = 0
    return config


def save_t5(directory: Path, tokenizer) -> int:
    from transformers import T5EncoderModel

    model = T5EncoderModel(t5_config())
    model.save_pretrained(directory)
    tokenizer.eos_token = "[SEP]"  # a WordPiece stand-in for T5's tokenizer; '</s>'-like end marker
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- rows


def toolkit_row(
    arch: str, method: str, checkpoint: Path, data: str, work: Path, config_file: Path | None, skip_epochs: int = 0,
    **fields,
) -> dict:
    """The toolkit's training through its library API, in its own process (benchmarks/timed_train.py).

    samples_per_s is the steady rate of the optimizer steps (evaluation and checkpoints left out,
    and the first ``skip_epochs`` epochs); run_samples_per_s is the run's own figure, Trainer's whole loop.
    """
    label = PRESET_ROWS[config_file]
    run_dir = work / f"run-{arch}-{method}-{label}"
    settings = {"backbone": arch, "model": str(checkpoint), "method": method, "head": "linear", "data": data,
                "output_dir": str(run_dir), "epochs": 1, **fields}
    command = [sys.executable, str(HERE / "timed_train.py"), "--skip-epochs", str(skip_epochs)]
    command += ["--config", str(config_file)] if config_file else []
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    completed = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"error": completed.stderr[-3000:]}
    timed = json.loads(lines[-1])
    return {
        "samples_per_s": timed["steady_samples_per_s"] or timed["run_samples_per_s"],
        "run_samples_per_s": timed["run_samples_per_s"],
        "peak_gpu_gib": timed["peak_gpu_gib"],
        "run_dir": str(run_dir),
    }


def plain_loop_row(arch: str, method: str, checkpoint: Path, texts: list[str], tokenizer, steps: int = 20) -> dict:
    """The reference loop of gpu_baseline.py on real lengths: bf16 model, random batches of 32."""
    from transformers import BitsAndBytesConfig, GteForSequenceClassification, T5ForSequenceClassification

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    if arch == "stella":
        config, cls, targets, skip = stella_config(), GteForSequenceClassification, ["q_proj", "k_proj", "v_proj", "o_proj"], ["classifier"]
    else:
        config, cls, targets, skip = t5_config(), T5ForSequenceClassification, ["q", "k", "v", "o"], ["classification_head"]
        config.eos_token_id = tokenizer.sep_token_id  # the WordPiece stand-in ends inputs with [SEP]
    config.num_labels = 2
    if method == "qlora":
        directory = tempfile.mkdtemp()
        cls(config).save_pretrained(directory)
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip,
        )
        model = cls.from_pretrained(directory, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": 0})
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = cls(config).to("cuda", dtype=torch.bfloat16)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets, task_type="SEQ_CLS"))
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=2e-4, fused=method == "full")
    generator = torch.Generator().manual_seed(0)
    encoded = tokenizer(texts, truncation=True, max_length=512)["input_ids"]

    def batch():
        picks = torch.randint(len(encoded), (32,), generator=generator).tolist()
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in picks]}, return_tensors="pt")
        return padded["input_ids"].cuda(), padded["attention_mask"].cuda(), torch.randint(0, 2, (32,), device="cuda")

    batches = [batch() for _ in range(steps + 3)]
    real_tokens = sum(int(mask.sum()) for _, mask, _ in batches[3:])

    def step(ids, mask, labels):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for b in batches[:3]:
        step(*b)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for b in batches[3:]:
        step(*b)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    result = {
        "samples_per_s": 32 * steps / elapsed,
        "tokens_per_s": real_tokens / elapsed,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
        "params": sum(p.numel() for p in model.parameters()),
    }
    del model, optimizer
    torch.cuda.empty_cache()
    return result


def pipeline_inference(arch: str, texts: list[str], tokenizer) -> dict:
    """Best reviews/s of transformers' text-classification pipeline (bf16) at batch 32 and 128."""
    from transformers import GteForSequenceClassification, T5ForSequenceClassification, pipeline

    directory = tempfile.mkdtemp()
    if arch == "stella":
        config = stella_config()
        config.num_labels = 2
        GteForSequenceClassification(config).save_pretrained(directory)
    else:
        config = t5_config()
        config.num_labels = 2
        config.eos_token_id = tokenizer.sep_token_id
        T5ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    classify = pipeline("text-classification", model=directory, device=0, dtype=torch.bfloat16)
    best = {}
    for batch_size in (32, 128):
        classify(texts[:256], batch_size=batch_size, truncation=True, max_length=512)
        torch.cuda.synchronize()
        started = time.perf_counter()
        classify(texts, batch_size=batch_size, truncation=True, max_length=512)
        torch.cuda.synchronize()
        rate = len(texts) / (time.perf_counter() - started)
        best[f"bs{batch_size}"] = round(rate, 1)
    del classify
    torch.cuda.empty_cache()
    return best


def toolkit_inference(run_dir: str, texts: list[str]) -> float:
    from review_toolkit import load_run

    classifier = load_run(run_dir)
    classifier.predict_proba(texts[:256], batch_size=128)
    torch.cuda.synchronize()
    started = time.perf_counter()
    classifier.predict_proba(texts, batch_size=128)
    torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True, help="a BERT WordPiece tokenizer directory (Stella's kind)")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--archs", default="stella,flan-t5")
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--rows", default="toolkit,throughput,compiled,recipe,plain,infer")
    args = parser.parse_args()

    import pandas as pd
    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = pd.read_csv(args.data).text.tolist()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    mean_tokens = sum(lengths) / len(lengths)
    peak = measure_peak_bf16()
    report = {"card": torch.cuda.get_device_name(), "peak_bf16_tflops": peak / 1e12, "mean_tokens": mean_tokens, "rows": []}
    print(f"card {report['card']}  peak {peak / 1e12:.0f} TFLOP/s  mean tokens/review {mean_tokens:.1f}", flush=True)
    work = Path(tempfile.mkdtemp())
    wanted = set(args.rows.split(","))

    for arch in args.archs.split(","):
        checkpoint = work / arch
        checkpoint.mkdir()
        encoder_params = (save_stella if arch == "stella" else save_t5)(checkpoint, AutoTokenizer.from_pretrained(args.tokenizer))
        for method in args.methods.split(","):
            flops_per_token = (6 if method == "full" else 4) * encoder_params
            rows = []
            if "toolkit" in wanted:
                rows.append(("toolkit", toolkit_row(arch, method, checkpoint, args.data, work, None)))
            if "throughput" in wanted:
                rows.append(("throughput", toolkit_row(arch, method, checkpoint, args.data, work, THROUGHPUT)))
            if "compiled" in wanted:
                # Compiling, and recompiling for new ranges of batch shapes, happens in the first epoch.
                rows.append(
                    ("compiled", toolkit_row(arch, method, checkpoint, args.data, work, COMPILED, skip_epochs=1, epochs=3))
                )
            if "recipe" in wanted:
                # 100 steps of 16 reviews (2 x 8) are enough for a steady rate; an epoch would take minutes.
                rows.append(("recipe", toolkit_row(arch, method, checkpoint, args.data, work, RECIPE, max_steps=100)))
            if "plain" in wanted:
                try:
                    rows.append(("plain", plain_loop_row(arch, method, checkpoint, texts, tokenizer)))
                except Exception as error:  # a row that fails is reported, the others still run
                    rows.append(("plain", {"error": repr(error)[:500]}))
            for name, row in rows:
                row.update(arch=arch, method=method, row=name)
                if "samples_per_s" in row:
                    tokens_per_s = row.get("tokens_per_s") or row["samples_per_s"] * mean_tokens
                    row["mfu"] = flops_per_token * tokens_per_s / peak
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
            toolkit_run = rows[0][1].get("run_dir") if rows and rows[0][0] == "toolkit" else None
            if "infer" in wanted and method == "full" and toolkit_run:
                inference = {"arch": arch, "row": "inference", "toolkit_reviews_per_s": round(toolkit_inference(toolkit_run, texts), 1)}
                try:
                    inference["pipeline_reviews_per_s"] = pipeline_inference(arch, texts, AutoTokenizer.from_pretrained(args.tokenizer))
                except Exception as error:  # keep the rows measured so far
                    inference["pipeline_reviews_per_s"] = {"error": repr(error)[:300]}
                report["rows"].append(inference)
                print(json.dumps(inference), flush=True)
        (out / "gpu_speed.json").write_text(json.dumps(report, indent=1))

    lines = [f"Card: {report['card']}; bf16 peak measured {report['peak_bf16_tflops']:.0f} TFLOP/s; mean {mean_tokens:.1f} tokens/review.", "",
             "| arch | method | row | samples/s (steady) | samples/s (whole run) | MFU | peak GPU GiB |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["row"] == "inference":
            lines.append(f"| {row['arch']} | inference | toolkit {row['toolkit_reviews_per_s']} reviews/s vs pipeline {row['pipeline_reviews_per_s']} | | | | |")
        elif "error" in row:
            lines.append(f"| {row['arch']} | {row['method']} | {row['row']} | failed | | | |")
        else:
            whole = f"{row['run_samples_per_s']:.1f}" if row.get("run_samples_per_s") else "-"
            lines.append(f"| {row['arch']} | {row['method']} | {row['row']} | {row['samples_per_s']:.1f} | {whole} | {row['mfu']:.3f} | {row['peak_gpu_gib']:.2f} |")
    (out / "gpu_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
