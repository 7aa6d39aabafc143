"""The matrix products of one BERT-large-shaped layer (Stella's size) at a packed row's token counts.

A server's rows hold a few thousand tokens, offline rows tens of thousands: this times the layer's
bf16 linear products (queries, keys and values, their output, the feed-forward's two) at each
count, replayed from a CUDA graph (launched one by one from Python, the small ones would time the
launches), with the cuBLAS choices PyTorch offers, each in a process of its own (some are read
once per process):

- ``default``: ``F.linear`` as the encoder calls it (cuBLASLt with the bias in its epilogue);
- ``cublas``: ``torch.backends.cuda.preferred_blas_library("cublas")``;
- ``addmm-cublas``: the bias added by cuBLAS's own product, not cuBLASLt's epilogue
  (``DISABLE_ADDMM_CUDA_LT=1``);
- ``workspace``: cuBLASLt given a 32 MiB workspace (``CUBLASLT_WORKSPACE_SIZE``);
- ``tunable``: PyTorch's TunableOp, which times every cuBLAS and cuBLASLt algorithm for each shape
  once and keeps the fastest.

    python3 benchmarks/gpu_gemm_shapes.py --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

TOKENS = (1024, 2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192, 16384, 32768)
# (name, in features, out features) of one layer's products; "qkv" is the three projections fused.
PRODUCTS = (("query", 1024, 1024), ("qkv", 1024, 3072), ("up", 1024, 4096), ("down", 4096, 1024))
VARIANTS = {
    "default": {},
    "cublas": {},
    "addmm-cublas": {"DISABLE_ADDMM_CUDA_LT": "1"},
    "workspace": {"CUBLASLT_WORKSPACE_SIZE": "32768"},
    "tunable": {"PYTORCH_TUNABLEOP_ENABLED": "1", "PYTORCH_TUNABLEOP_TUNING": "1", "PYTORCH_TUNABLEOP_VERBOSE": "0"},
}


def measure(variant: str) -> list[dict]:
    import torch
    import torch.nn.functional as F

    if variant == "cublas":
        torch.backends.cuda.preferred_blas_library("cublas")
    if variant == "tunable":
        torch.cuda.tunable.set_filename(f"/tmp/tunableop_{os.getpid()}.csv")
    results = []
    for tokens in TOKENS:
        row = {"variant": variant, "tokens": tokens}
        for name, inputs, outputs in PRODUCTS:
            x = torch.randn(1, tokens, inputs, device="cuda", dtype=torch.bfloat16)
            weight = torch.randn(outputs, inputs, device="cuda", dtype=torch.bfloat16) / inputs**0.5
            bias = torch.randn(outputs, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):
                F.linear(x, weight, bias)
            torch.cuda.synchronize()
            # Replayed from a CUDA graph: launched one by one from Python, products of a few
            # thousand tokens take less GPU time than their launch takes the host.
            repeats = 20
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(repeats):
                    F.linear(x, weight, bias)
            graph.replay()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                graph.replay()
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000 / (5 * repeats)
            row[f"{name}_tflops"] = round(2 * tokens * inputs * outputs / seconds / 1e12)
            row[f"{name}_us"] = round(seconds * 1e6, 1)
        # One layer's products per token: three separate projections, their output, the feed-forward.
        layer = 4 * row["query_us"] + row["up_us"] + row["down_us"]
        fused = row["qkv_us"] + row["query_us"] + row["up_us"] + row["down_us"]
        row["layer_ns_per_token"] = round(layer * 1e3 / tokens, 1)
        row["layer_ns_per_token_fused_qkv"] = round(fused * 1e3 / tokens, 1)
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="gpu_gemm_shapes")
    parser.add_argument("--variant", choices=list(VARIANTS), help="measure this one here (used by the parent process)")
    args = parser.parse_args()
    if args.variant:
        measure(args.variant)
        return
    rows = []
    for variant, environment in VARIANTS.items():
        completed = subprocess.run(
            [sys.executable, __file__, "--out", args.out, "--variant", variant],
            env={**os.environ, **environment}, capture_output=True, text=True,
        )
        sys.stderr.write(completed.stderr[-2000:])
        for line in completed.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                rows.append(json.loads(line))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
