"""DDP's gradient all-reduce: averaged in bfloat16 when asked (over gloo here, as over NCCL), in buckets sized to the model."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing
from torch import nn

from review_toolkit.accel.gradient_sync import GradientSync, bucket_mb_for
from review_toolkit.accel.plan import AccelerationPlan
from review_toolkit.config import TrainConfig
from review_toolkit.train.trainer import ReviewTrainer, gradient_sync_for, training_arguments
from conftest import free_port


def test_buckets_are_sized_to_the_trainable_weights_within_bounds():
    full_stella = 435_000_000 * 4  # float32 gradients of a full fine-tuning
    assert bucket_mb_for(full_stella) == int(full_stella / 2**20 / 16)
    assert bucket_mb_for(4 * 2**20) == 8  # an adapter's few megabytes: the smallest bucket
    assert bucket_mb_for(40 * 2**30) == 200


def test_gradients_are_averaged_in_bfloat16_where_training_is_bf16_unless_asked_otherwise():
    model = nn.Linear(256, 256)
    config = TrainConfig()
    assert gradient_sync_for(config, model, bf16=True).dtype == "bfloat16"
    assert gradient_sync_for(config, model, bf16=False).dtype == "float32"
    chosen = gradient_sync_for(TrainConfig(ddp_gradient_dtype="float32", ddp_bucket_mb=50), model, bf16=True)
    assert (chosen.dtype, chosen.bucket_mb) == ("float32", 50)


def _average_gradients(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from accelerate.utils import DistributedDataParallelKwargs

        for dtype in ("bfloat16", "float32"):
            handler = GradientSync(dtype, bucket_mb=1).ddp_kwargs(DistributedDataParallelKwargs())
            torch.manual_seed(0)
            model = nn.parallel.DistributedDataParallel(nn.Linear(64, 4), **handler.to_kwargs())
            handler.register_comm_hook(model)
            torch.manual_seed(1 + rank)  # each process its own batch
            model(torch.randn(8, 64)).pow(2).sum().backward()
            torch.save(model.module.weight.grad, f"{out}/{dtype}-{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Leave without freeing the models: gloo's process group, freed with the last of them, joins
    # its worker threads while holding the GIL, which a worker may still need to free its last
    # all-reduce, and the process then never exits. The results are saved.
    os._exit(0)


def test_two_processes_step_with_the_same_average_of_their_gradients(tmp_path):
    multiprocessing.spawn(_average_gradients, args=(free_port(), str(tmp_path)), nprocs=2)

    torch.manual_seed(0)
    reference = nn.Linear(64, 4)
    gradients = []
    for rank in (0, 1):  # what each process computed alone
        reference.zero_grad()
        torch.manual_seed(1 + rank)
        reference(torch.randn(8, 64)).pow(2).sum().backward()
        gradients.append(reference.weight.grad.clone())
    exact = (gradients[0] + gradients[1]) / 2
    averaged = {dtype: [torch.load(tmp_path / f"{dtype}-{rank}.pt") for rank in (0, 1)] for dtype in ("bfloat16", "float32")}

    for pair in averaged.values():
        assert torch.equal(pair[0], pair[1])  # every process steps with the same gradients
    torch.testing.assert_close(averaged["float32"][0], exact)
    in_bf16 = sum(gradient.to(torch.bfloat16) / 2 for gradient in gradients).float()
    torch.testing.assert_close(averaged["bfloat16"][0], in_bf16, rtol=2**-7, atol=1e-6)
    assert not torch.equal(averaged["bfloat16"][0], exact)  # the average was taken in bfloat16
    # Off the exact average by bfloat16 rounding of the terms, and no more.
    error = (averaged["bfloat16"][0] - exact).abs()
    assert torch.all(error <= 2**-8 * (gradients[0].abs() + gradients[1].abs()) + 1e-7)


def test_trainer_hands_the_settings_to_accelerate(tmp_path):
    """Trainer builds its Accelerator with DDP settings of its own: the toolkit's replace them."""
    config = TrainConfig()
    arguments = training_arguments(config, tmp_path, learning_rate=1e-3, optimizer="adamw_torch", has_validation=False, bf16=False)
    sync = GradientSync("bfloat16", bucket_mb=64)
    trainer = ReviewTrainer(model=nn.Linear(4, 2), args=arguments, plan=AccelerationPlan.plain(), gradient_sync=sync)

    handler = trainer.accelerator.ddp_handler
    assert handler.gradient_dtype == "bfloat16"
    assert handler.to_kwargs() == {
        "bucket_cap_mb": 64, "gradient_as_bucket_view": True, "broadcast_buffers": False,
    }
