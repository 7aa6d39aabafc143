"""Speed on GPUs: packed batches, fused LoRA layers, CUDA graphs, compiled layers.

Each of these changes how fast a step runs, never what it computes: a run without any of
them trains the same model, slower.
"""
