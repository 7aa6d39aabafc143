"""How DDP all-reduces gradients between the processes of a launch: in what dtype, in what buckets.

Each step of DDP training averages every trainable weight's gradient over the processes; the
all-reduce runs in buckets during backward, so the communication of the last layers' gradients
overlaps the backward of the first ones. Two settings decide whether it keeps up:

* **dtype**: gradients of float32 weights are float32. Under bf16 autocast they were computed
  from bf16 products anyway; all-reduced in bfloat16 they take half the bytes on the wire (the
  average is taken in bfloat16, then written back into the float32 gradients the optimizer
  reads). The hook is the toolkit's own, not ``torch``'s ``bf16_compress_hook``, which refuses
  any backend but NCCL: the same code averages over gloo on CPUs, so it is tested there.
* **bucket size**: DDP's default of 25 MB cuts a full fine-tuning of a 400M-parameter encoder
  (1.7 GB of float32 gradients) into ~70 all-reduces, each with its own launch and latency.
  Buckets of a sixteenth of the trainable weights' gradients (within 8-200 MB) cut it into 16,
  the first of them ready while most of the backward is still to run; an adapter's few
  megabytes stay in one small bucket, whose all-reduce is short however it is cut.

Gradient accumulation needs nothing here: Trainer skips the all-reduce (``no_sync``) on every
micro-step but the last of each optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import DistributedDataParallelKwargs

#: All-reduces a model's gradients take (its buckets), before the bounds below.
BUCKETS_PER_MODEL = 16
SMALLEST_BUCKET_MB, LARGEST_BUCKET_MB = 8, 200


def bucket_mb_for(trainable_bytes: int) -> int:
    """Megabytes per DDP bucket for gradients of ``trainable_bytes`` in all."""
    return int(min(LARGEST_BUCKET_MB, max(SMALLEST_BUCKET_MB, trainable_bytes / 2**20 / BUCKETS_PER_MODEL)))


# Unannotated: DDP checks a hook's annotations as objects, and under ``from __future__ import
# annotations`` they would be strings.
def bf16_gradient_average(process_group, bucket):
    """A DDP communication hook: the ``dist.GradBucket``'s gradients averaged over the processes
    in bfloat16; returns a future of the bucket's float32 buffer holding the average."""
    group = process_group if process_group is not None else dist.group.WORLD
    gradients = bucket.buffer()
    compressed = gradients.to(torch.bfloat16).div_(group.size())
    reduced = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def written_back(future: torch.futures.Future) -> torch.Tensor:
        gradients.copy_(future.value()[0])
        return gradients

    return reduced.then(written_back)


@dataclass(frozen=True)
class GradientSync:
    """What DDP is told: the all-reduce dtype ("bfloat16" or "float32") and the bucket size."""

    dtype: str
    bucket_mb: int

    @classmethod
    def choose(cls, *, dtype: str | None, bucket_mb: int | None, bf16: bool, trainable_bytes: int) -> GradientSync:
        """The settings asked for, else bfloat16 where training runs in bf16 and buckets sized to the model."""
        return cls(dtype or ("bfloat16" if bf16 else "float32"), bucket_mb or bucket_mb_for(trainable_bytes))

    def ddp_kwargs(self, handler: DistributedDataParallelKwargs) -> DistributedDataParallelKwargs:
        """``handler`` (an Accelerator's DDP settings, its ``ddp_handler``) with these applied.

        accelerate takes only its own class among an Accelerator's arguments: this one, which also
        registers the bfloat16 hook when the model is wrapped, replaces the handler afterwards."""
        settings = handler.to_dict()
        settings.update(bucket_cap_mb=self.bucket_mb, gradient_as_bucket_view=True)
        return _DistributedDataParallelKwargs(**settings, gradient_dtype=self.dtype)

    def describe(self) -> dict[str, Any]:
        return {"gradient_dtype": self.dtype, "bucket_mb": self.bucket_mb}


@dataclass
class _DistributedDataParallelKwargs(DistributedDataParallelKwargs):
    """accelerate's DDP settings, registering the bfloat16 average as the communication hook."""

    gradient_dtype: str = "float32"

    def to_dict(self, ignore_keys: tuple[str, ...] = ("comm_hook", "comm_wrapper", "comm_state_option", "gradient_dtype")) -> dict:
        return super().to_dict(ignore_keys)

    def register_comm_hook(self, model: torch.nn.Module) -> None:
        if self.gradient_dtype == "bfloat16":
            model.register_comm_hook(state=None, hook=bf16_gradient_average)
        else:
            super().register_comm_hook(model)


__all__ = ["GradientSync", "bf16_gradient_average", "bucket_mb_for"]
