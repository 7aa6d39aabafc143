"""Training torch models with Hugging Face Trainer.

Two things differ from a stock Trainer:

* checkpoints hold only the trainable weights (adapters, head, or everything
  for full fine-tuning), so a 4-bit base model is never serialised and a LoRA
  checkpoint stays a few megabytes;
* early stopping on validation macro F1 restores the best checkpoint at the end.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Sequence

import safetensors.torch
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from review_toolkit.accel.gradient_sync import GradientSync
from review_toolkit.accel.plan import AccelerationPlan
from review_toolkit.config import TrainConfig
from review_toolkit.accel.gpu_scoring import use_shape_agnostic_attention
from review_toolkit.errors import ConfigError
from review_toolkit.evaluation.metrics import trainer_compute_metrics
from review_toolkit.runtime.interrupts import InterruptionCallback
from review_toolkit.runs.checkpoints import (
    CHECKPOINT_DIRECTORY,
    CHECKPOINT_PREFIX,
    STATE_FILE,
    checkpoint_problem,
    checkpoints_in,
    incomplete_checkpoints_in,
)
from review_toolkit.train.tracking import TRAINING_LOG_FILE, TrainingHistory, tracker_callbacks

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"  # the name Trainer looks for when it restores a checkpoint


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


class ReviewTrainer(Trainer):
    """Trainer whose checkpoints hold the trainable weights only, with the batches ``plan`` cuts."""

    def __init__(self, *args: Any, plan: AccelerationPlan, gradient_sync: GradientSync | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gradient_sync = gradient_sync
        if gradient_sync is not None and self.accelerator.ddp_handler is not None:
            # Read when train() wraps the model in DDP: its all-reduce dtype and bucket size.
            self.accelerator.ddp_handler = gradient_sync.ddp_kwargs(self.accelerator.ddp_handler)
        self.plan = plan
        # What checkpoints hold, named before FSDP (when launched with it) shards the model.
        self.trainable_names = [name for name, p in self.model.named_parameters() if p.requires_grad]

    def get_train_dataloader(self) -> DataLoader:
        sampler = None
        if "length" in self.train_dataset.column_names:
            sampler = self.plan.batch_sampler(
                self.train_dataset["length"],
                max_batch_size=self.args.per_device_train_batch_size,
                seed=self.args.seed,
                processes=self.accelerator.num_processes,
            )
        if sampler is None:
            return super().get_train_dataloader()
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _clip_grad_norm(self, model: nn.Module) -> torch.Tensor:
        """Clip the gradients of the weights the optimizer steps, not of every parameter.

        Trainer hands clipping ``model.parameters()``: under PEFT several times more frozen
        weights than trainable ones, walked on every step for gradients they never have (host
        time on steps that wait on the host). The optimizer's list is the same weights' gradients.
        FSDP and DeepSpeed clip in their own way and keep Trainer's path.
        """
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._clip_grad_norm(model)
        stepped = [p for group in self.optimizer.param_groups for p in group["params"]]
        return self.accelerator.clip_grad_norm_(stepped, self.args.max_grad_norm)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        if state_dict is None:
            state = trainable_state(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        else:
            # Under FSDP the weights are sharded: Trainer gathers them into a full state dict first
            # (every process takes part, the main one receives it) and passes it here. Trainer also
            # writes FSDP's own pytorch_model_fsdp.bin beside it, which it restores the best model from.
            state = {name: state_dict[name].detach().contiguous().cpu() for name in self.trainable_names}
        safetensors.torch.save_file(state, os.path.join(output_dir, WEIGHTS_NAME))

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Frozen weights are absent from checkpoints by design; only surprises are worth a word.
        if load_result.unexpected_keys:
            raise RuntimeError(f"Checkpoint holds weights this model lacks: {load_result.unexpected_keys[:5]}")


def warmup_steps(config: TrainConfig) -> float | int:
    return config.warmup if config.warmup < 1 else int(config.warmup)


def training_arguments(
    config: TrainConfig,
    output_dir: Path,
    *,
    learning_rate: float,
    optimizer: str,
    has_validation: bool,
    bf16: bool,
    progress: bool = True,
) -> TrainingArguments:
    evaluate_each_epoch = "epoch" if has_validation else "no"
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=warmup_steps(config),
        weight_decay=config.weight_decay,
        optim=optimizer,
        bf16=bf16,
        eval_strategy=evaluate_each_epoch,
        save_strategy=evaluate_each_epoch if has_validation else "epoch",
        save_total_limit=1,
        load_best_model_at_end=has_validation,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives --resume-from
        metric_for_best_model="f1_macro",
        greater_is_better=True,
        logging_strategy="epoch",
        logging_nan_inf_filter=False,  # its per-step NaN check waits for the GPU every step
        report_to="none",
        # Every trainable weight of a composed model takes part in every step (encoders' own
        # poolers are frozen), so DDP need not walk the autograd graph for unused ones each step.
        ddp_find_unused_parameters=False,
        ddp_broadcast_buffers=False,  # encoders' buffers (position ids, rotary tables) never change
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
    )
    if args.n_gpu > 1:
        # A single process that sees several GPUs would get Trainer's nn.DataParallel, which
        # replicates the model every step and breaks on modules that look up their parameters.
        logger.warning(
            "%d GPUs are visible to this one process; training on the first. To train on all of them, "
            "launch with: accelerate launch --multi_gpu --num_processes %d -m review_toolkit train ...",
            args.n_gpu, args.n_gpu,
        )
        args._n_gpu = 1  # Trainer's own switch: no DataParallel
    return args


def tokenized_dataset(tokenizer: Any, texts: list[str], labels: list[int], max_length: int) -> Dataset:
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": list(labels),
            "length": [len(ids) for ids in encoded["input_ids"]],
        }
    )


def feature_dataset(features: Any, labels: list[int]) -> Dataset:
    return Dataset.from_dict({"features": [list(map(float, row)) for row in features], "labels": list(labels)}).with_format(
        "torch"
    )


def resolve_resume_checkpoint(resume_from: str | None) -> str | None:
    """A checkpoint directory, or the last complete checkpoint inside a run directory or its checkpoints/.

    A checkpoint a killed process left half-written is skipped with a warning that names it and
    the one used instead (see :mod:`review_toolkit.runs.checkpoints`).
    """
    if not resume_from:
        return None
    path = Path(resume_from).expanduser()
    if (path / STATE_FILE).is_file() or path.name.startswith(CHECKPOINT_PREFIX):
        problem = checkpoint_problem(path) if path.is_dir() else "it does not exist"
        if problem is None:
            return str(path)
        siblings = [c for c in checkpoints_in(path.parent.parent)] if path.parent.name == CHECKPOINT_DIRECTORY else []
        hint = f" The last complete one is {siblings[-1]}." if siblings else ""
        raise ConfigError(
            f"--resume-from {resume_from}: that checkpoint cannot be resumed from ({problem}): it is incomplete "
            f"(a training killed while saving it) or not one this toolkit wrote.{hint} Give the run directory to "
            "resume from its last complete checkpoint."
        )
    for run in (path, path.parent if path.name == CHECKPOINT_DIRECTORY else None):
        if run is None or not (run / CHECKPOINT_DIRECTORY).is_dir():
            continue
        complete = checkpoints_in(run)
        skipped = incomplete_checkpoints_in(run)
        if complete:
            for checkpoint, problem in skipped:
                logger.warning("Skipping the incomplete checkpoint %s (%s).", checkpoint, problem)
            if skipped:
                logger.warning("Resuming from %s, the last complete checkpoint.", complete[-1])
            return str(complete[-1])
        if skipped:
            listed = "; ".join(f"{checkpoint.name}: {problem}" for checkpoint, problem in skipped)
            raise ConfigError(
                f"--resume-from {resume_from}: no complete checkpoint there ({listed}); the training was killed "
                "while saving its first one. Run the command again without --resume-from to start over "
                "(add --overwrite if it says the staging folder is in the way)."
            )
    raise ConfigError(
        f"--resume-from {resume_from}: no training checkpoint found there. Give a run directory "
        "(or an interrupted one ending in .partial) that contains checkpoints/checkpoint-N, or such a checkpoint."
    )


def gradient_sync_for(config: TrainConfig, model: nn.Module, *, bf16: bool) -> GradientSync:
    """How DDP all-reduces ``model``'s gradients in a launch of several processes (unused in one)."""
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return GradientSync.choose(
        dtype=config.ddp_gradient_dtype, bucket_mb=config.ddp_bucket_mb, bf16=bf16, trainable_bytes=trainable_bytes
    )


def train_with_trainer(
    model: nn.Module,
    *,
    config: TrainConfig,
    train_dataset: Dataset,
    validation_dataset: Dataset | None,
    checkpoint_dir: Path,
    learning_rate: float,
    optimizer: str,
    plan: AccelerationPlan,
    tokenizer: Any | None = None,
    max_length: int | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> Trainer:
    """Train ``model`` and leave the best validation checkpoint's weights in it.

    ``plan`` gives the precision, the collator of tokenized batches (with ``tokenizer``) and
    the training batches' sampler; the model must already be prepared by it.
    """
    use_shape_agnostic_attention()
    has_validation = validation_dataset is not None and len(validation_dataset) > 0
    args = training_arguments(
        config,
        checkpoint_dir,
        learning_rate=learning_rate,
        optimizer=optimizer,
        has_validation=has_validation,
        bf16=plan.bf16.applies,
        progress=progress,
    )
    collator = None
    if tokenizer is not None:
        collator = plan.collator(tokenizer, max_length=max_length, pad_to_max_length=config.pad_to_max_length)
    history = TrainingHistory()
    # SIGINT/SIGTERM: checkpoint, then stop. The run's folder (the checkpoints' parent) keeps the history.
    run_staging = checkpoint_dir.parent
    every_callback: list[Any] = [InterruptionCallback(), history, *tracker_callbacks(config, run_staging), *callbacks]
    if has_validation and config.early_stopping_patience:
        every_callback.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = ReviewTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=validation_dataset if has_validation else None,
        data_collator=collator,
        compute_metrics=trainer_compute_metrics,
        callbacks=every_callback,
        plan=plan,
        gradient_sync=gradient_sync_for(config, model, bf16=plan.bf16.applies),
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # without progress bars Trainer prints every log line
    resume = resolve_resume_checkpoint(config.resume_from)
    # Half-written checkpoints in this training's own folder (resuming in place) go: Trainer would
    # count them as the newest when it rotates checkpoints.
    if checkpoint_dir.name == CHECKPOINT_DIRECTORY and trainer.args.should_save:
        for checkpoint, _ in incomplete_checkpoints_in(checkpoint_dir.parent):
            shutil.rmtree(checkpoint)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except pickle.UnpicklingError as error:  # Trainer loads optimizer / scheduler state with weights_only
        if resume is None:
            raise
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ConfigError(
            f"--resume-from {config.resume_from}: a file of the checkpoint {resume} was refused because it holds "
            f"more than tensors ({first_line[:200]}); nothing in it was run. Resume only from checkpoints that "
            "this toolkit wrote."
        ) from None
    if trainer.is_world_process_zero():
        history.write(run_staging / TRAINING_LOG_FILE)
    return trainer


def gathered_state_dict(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every weight of a model FSDP trained, whole, on every process (collective: all must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # full_state_dict without cpu_offload: gathered onto each process's own device, not only the main one's.
    return get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True))
