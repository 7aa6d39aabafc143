"""Speed on GPUs: packed batches, fused LoRA layers, CUDA graphs, compiled layers, token-budget batches.

``plan.AccelerationPlan`` decides which of them a run gets, applies them and reports them; training
asks it and nothing else here. Each changes how fast a step runs, never what it computes: a run
without any of them trains the same model, slower.
"""
