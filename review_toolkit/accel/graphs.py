"""Training steps of a packed encoder replayed from CUDA graphs.

At the default batch (32 reviews, a packed row of a few thousand tokens) a
fine-tuning step is some thousands of small kernels, and the GPU finishes each
long before the host has launched the next (benchmarks/README.md, "CUDA
graphs", has the profile). A CUDA graph
records the kernels of the encoder's forward and backward once and launches
them again as one: the host's share of a step shrinks to the head, the loss
and the optimizer.

A graph replays fixed shapes at fixed addresses. Training rows therefore take
one shape for the whole run (``packing.StaticRowLayout``, sized by the token
budget), the batch is copied into the graph's own input tensors, and the
weights must stay where they are (optimizers update them in place). A batch of
another shape, evaluation, and anything under ``torch.no_grad`` run the encoder
as before. Dropout draws new masks at every replay (PyTorch's graph-safe
random numbers).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from review_toolkit.errors import ConfigError
from review_toolkit.accel.packing import StaticRowLayout, packed_pooled

#: Eager passes before capture: lazily created state (cuBLAS workspaces on the capture stream,
#: cached casts of frozen weights) must exist before the graph records the kernels.
WARMUP_PASSES = 2


def graph_obstacles(*, packed: bool, config, processes: int) -> list[str]:
    """What keeps this run from training through CUDA graphs; empty when nothing does."""
    obstacles = []
    if not torch.cuda.is_available():
        obstacles.append("no CUDA GPU is visible")
    if not packed:
        obstacles.append(
            "training batches are not packed (packing needs bf16 on a GPU, an encoder that packs, and no "
            "pad_to_max_length)"
        )
    if not config.max_tokens_per_batch:
        obstacles.append("packed rows need a token budget (max_tokens_per_batch) to take one shape")
    if config.compile:
        obstacles.append("compiled layers record their own graphs")
    if config.gradient_checkpointing:
        obstacles.append("gradient checkpointing recomputes activations outside the recorded backward")
    if processes > 1:
        obstacles.append(f"this launch trains on {processes} processes; graphs are recorded for one")
    return obstacles


def cuda_graphs_wanted(requested: bool | None, *, packed: bool, config, processes: int) -> bool:
    """Whether to replay training steps from CUDA graphs: as ``cuda_graphs`` asks, or wherever possible."""
    if requested is False:
        return False
    obstacles = graph_obstacles(packed=packed, config=config, processes=processes)
    if requested and obstacles:
        raise ConfigError(
            f"cuda_graphs: not possible for this run: {'; '.join(obstacles)}. "
            "Set cuda_graphs to false, or leave it unset to use graphs wherever they apply."
        )
    return not obstacles


class GraphedEncoder:
    """Forward and backward of a packed ``PooledEncoder`` recorded for one ``StaticRowLayout``.

    Called with a packed batch in training, it returns the pooled embeddings of every review
    slot of the layout (``[review_slots, width]``), differentiable with respect to the
    encoder's trainable weights; or None where the batch does not have the layout's shape.
    The graphs are recorded at the first call, under the autocast settings of that call; a step
    that cannot be recorded (one that reads a GPU value on the host, say) is refused by name.
    """

    def __init__(self, encoder: nn.Module, layout: StaticRowLayout) -> None:
        self.encoder = encoder
        self.layout = layout
        self.recorded = False  # stays True after ``release``: the run trained through graphs
        self._drop_recording()

    def _drop_recording(self) -> None:
        self.parameters: list[nn.Parameter] = []
        self.inputs: list[torch.Tensor] = []
        self.output: torch.Tensor | None = None
        self.grad_output: torch.Tensor | None = None
        self.grads: tuple[torch.Tensor | None, ...] = ()
        self.forward_graph: torch.cuda.CUDAGraph | None = None
        self.backward_graph: torch.cuda.CUDAGraph | None = None

    def matches(self, input_ids: torch.Tensor, cu_seq_lens: torch.Tensor, max_length: int) -> bool:
        layout = self.layout
        return (
            input_ids.is_cuda
            and tuple(input_ids.shape) == (1, layout.row_length)
            and cu_seq_lens.shape[0] == layout.review_slots + layout.filler_segments + 1
            and max_length == layout.max_segment_length
        )

    def __call__(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seq_lens: torch.Tensor,
        review_index: torch.Tensor,
        max_length: int,
    ) -> torch.Tensor | None:
        if not self.matches(input_ids, cu_seq_lens, max_length):
            return None
        batch = (input_ids, position_ids, cu_seq_lens, review_index)
        if self.forward_graph is None:
            try:
                self._record(batch)
            except Exception as error:  # an operation of the encoder that a graph cannot hold
                # Not retried eagerly: a capture that failed half-way leaves PyTorch's CUDA random
                # number generator expecting a capture, and every later dropout in this process fails.
                raise ConfigError(
                    "cuda_graphs: this encoder's training step could not be recorded as a CUDA graph "
                    f"({type(error).__name__}: {error}). Train with cuda_graphs set to false (--no-cuda-graphs)."
                ) from error
        for recorded, given in zip(self.inputs, batch):
            recorded.copy_(given, non_blocking=True)
        return _Replay.apply(self, *self.parameters)

    def _forward(self) -> torch.Tensor:
        input_ids, position_ids, cu_seq_lens, review_index = self.inputs
        return packed_pooled(
            self.encoder, input_ids, position_ids, cu_seq_lens, self.layout.max_segment_length, review_index,
            self.layout.review_slots,
        )

    def _gradients(self, output: torch.Tensor, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # allow_unused: weights the pooled output does not depend on (an encoder's own pooler
        # under full fine-tuning) get no gradient, as in an eager backward.
        return torch.autograd.grad(output, self.parameters, grad_output, allow_unused=True)

    def _record(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.inputs = [tensor.clone() for tensor in batch]
        self.parameters = [p for p in self.encoder.parameters() if p.requires_grad]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), _uncached_autocast():
            for _ in range(WARMUP_PASSES):
                output = self._forward()
                self._gradients(output, torch.zeros_like(output))
            del output
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the warm-up's cached blocks, for the graphs' own pool to take
        pool = torch.cuda.graph_pool_handle()
        forward_graph, backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with _uncached_autocast(), torch.cuda.graph(forward_graph, pool=pool, stream=stream):
            output = self._forward()
        grad_output = torch.zeros_like(output)
        with torch.cuda.graph(backward_graph, pool=pool, stream=stream):
            grads = self._gradients(output, grad_output)
        self.output, self.grad_output, self.grads = output.detach(), grad_output, grads
        self.forward_graph, self.backward_graph = forward_graph, backward_graph
        self.recorded = True

    def release(self) -> None:
        """Let the graphs and the memory they hold go (after training); later calls record anew."""
        self._drop_recording()

    def release_shared_gradients(self) -> None:
        """Give every weight whose ``.grad`` is the recorded gradient tensor itself a copy of its own.

        Autograd may keep a returned gradient as the weight's ``.grad`` without copying it; the
        next backward replay writes that tensor again. Before it does, a ``.grad`` still held
        (accumulated over several batches, or zeroed rather than cleared) gets its own copy.
        """
        for parameter, grad in zip(self.parameters, self.grads):
            if grad is not None and parameter.grad is not None and parameter.grad.data_ptr() == grad.data_ptr():
                parameter.grad = parameter.grad.clone()


@contextlib.contextmanager
def _uncached_autocast() -> Iterator[None]:
    """The surrounding autocast, without its cache of cast weights.

    A cast cached before recording would be baked into the graph as it was then, and replays
    would keep multiplying the weights' old values after the optimizer changed them.
    """
    if not torch.is_autocast_enabled("cuda"):
        yield
        return
    with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False):
        yield


class _Replay(torch.autograd.Function):
    """The recorded forward, with the recorded backward as its gradient."""

    @staticmethod
    def forward(ctx, graphed: GraphedEncoder, *parameters: torch.Tensor) -> torch.Tensor:
        ctx.graphed = graphed
        graphed.forward_graph.replay()
        # A copy: the recorded output tensor is written again by the next replay.
        return graphed.output.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        graphed = ctx.graphed
        graphed.release_shared_gradients()
        graphed.grad_output.copy_(grad_output)
        graphed.backward_graph.replay()
        return (None, *graphed.grads)
