"""Batches for CPUs, bounded by padded tokens: shared by the PyTorch and the ONNX Runtime paths.

Kept free of torch so that the ONNX backend scores without importing it.
"""

from __future__ import annotations

from review_toolkit.accel.batching import token_budget_ranges

# The widest activation of a CPU batch (tokens x feed-forward width, float32). Batches whose
# activations stay in the cores' caches run faster, and blocks under 4 MiB are never handed back
# to the kernel and page-faulted in again by the next op (glibc's heap keeps them; predict sets
# that threshold, inference/scoring.py) (benchmarks/README.md, "CPU batches bounded by activation size").
CPU_ACTIVATION_BYTES = 4 << 20


#: Padded tokens a CPU batch may compute beyond its reviews' own, as a fraction of them.
CPU_PADDING_SLACK = 0.25


def cpu_token_budget_batches(lengths: list[int], batch_size: int, feed_forward_width: int) -> list[list[int]]:
    """Length-sorted batches for CPUs, bounded by padded tokens rather than by reviews.

    A batch holds up to ``batch_size`` x 128 padded tokens, and few enough that its widest
    activation (tokens x feed-forward width, float32) stays under ``CPU_ACTIVATION_BYTES``:
    short reviews share larger batches, long ones smaller (benchmarks/README.md, "CPU embedding").
    A CPU computes every padded token at full cost, so a batch also ends where padding would
    pass ``CPU_PADDING_SLACK`` of its real tokens: a few reviews of scattered lengths (a server's
    batch) become several small batches rather than one padded to the longest.
    """
    budget = max(1, min(batch_size * 128, CPU_ACTIVATION_BYTES // (4 * feed_forward_width)))
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for start, end in token_budget_ranges([lengths[i] for i in order], max_tokens=budget, max_batch_size=budget):
        batch: list[int] = []
        tokens = 0
        for index in order[start:end]:  # ascending: the newest review is the batch's longest
            if batch and (len(batch) + 1) * lengths[index] > (1 + CPU_PADDING_SLACK) * (tokens + lengths[index]):
                batches.append(batch)
                batch, tokens = [], 0
            batch.append(index)
            tokens += lengths[index]
        batches.append(batch)
    return batches
