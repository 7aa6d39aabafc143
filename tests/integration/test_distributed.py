"""Multi-process runs (``accelerate launch --multi_gpu``), on the CPU over gloo with a tiny BERT.

Two processes must give what one gives: the same embeddings, gathered in input
order; the same metrics on the whole test split; one run directory, written
once, that loads and predicts in a plain process.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from review_toolkit import load_run
from review_toolkit.accel.batching import TokenBudgetBatchSampler
from review_toolkit.runtime.distributed import shard_bounds
from review_toolkit.train.model import ReviewClassifierModel
from conftest import free_port


def launch(processes: int, arguments: list[str], cache: Path) -> subprocess.CompletedProcess:
    """``review-toolkit ARGUMENTS`` as a user launches it: through accelerate when there are several processes."""
    if processes == 1:
        command = [sys.executable, "-m", "review_toolkit"]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "review_toolkit",
        ]
    return run_command(command, arguments, cache)


def run_command(command: list[str], arguments: list[str], cache: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "REVIEW_TOOLKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [*command, *arguments, "--quiet"], capture_output=True, text=True, env=environment, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


@pytest.fixture(scope="module")
def odd_reviews(small_reviews, tmp_path_factory) -> Path:
    """239 reviews: an odd count, so the two processes' shards differ in size."""
    path = tmp_path_factory.mktemp("odd") / "reviews.csv"
    pd.read_csv(small_reviews).iloc[:239].to_csv(path, index=False)
    return path


def cached_array(cache: Path) -> np.ndarray:
    """Every vector of the cache's one store, in the order of the texts' keys."""
    (entry,) = (cache / "embeddings").glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(entry)) as connection:
        rows = connection.execute("SELECT key, vector FROM vectors ORDER BY key").fetchall()
    return np.stack([np.frombuffer(vector, dtype=np.float32) for _, vector in rows])


def rounded(value, digits: int = 6):
    """Metrics with floats rounded: vectors agree to ~1e-7, not bit for bit."""
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return round(value, digits) if isinstance(value, float) else value


def split_rows(run: Path) -> list[tuple[str, str]]:
    with open(run / "split_predictions.csv", encoding="utf-8") as handle:
        return [(row["split"], row["row"]) for row in csv.DictReader(handle)]


def test_shards_cover_every_item_once_in_order():
    for total in (0, 1, 2, 5, 239):
        for processes in (1, 2, 3, 8):
            bounds = [shard_bounds(total, process, processes) for process in range(processes)]
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(total))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_processes_stepping_together_get_batches_of_similar_length():
    """Each optimizer step waits for the slowest process: its batches should cost about the same."""
    from accelerate.data_loader import BatchSamplerShard

    lengths = np.random.default_rng(0).integers(5, 400, size=1001).tolist()
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=4096, max_batch_size=32, seed=1, group_size=2)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=rank)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    seen = [index for shard in shards for batch in shard for index in batch]
    assert set(seen) == set(range(len(lengths)))  # every review trains; accelerate pads the last step by repeating
    rank_of_length = {value: rank for rank, value in enumerate(sorted(set(lengths)))}
    for batch_0, batch_1 in zip(*shards):
        longest = [max(lengths[i] for i in batch) for batch in (batch_0, batch_1)]
        assert abs(rank_of_length[longest[0]] - rank_of_length[longest[1]]) <= 40, longest


@pytest.mark.slow
def test_two_processes_embed_and_score_like_one(tiny_bert, odd_reviews, tmp_path):
    common = ["train", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg", "--data", str(odd_reviews)]
    launch(1, [*common, "--output-dir", str(tmp_path / "one")], tmp_path / "cache-one")
    two = launch(2, [*common, "--output-dir", str(tmp_path / "two")], tmp_path / "cache-two")

    # Gathered in input order: text for text the vectors one process computes (padding differs per batch).
    np.testing.assert_allclose(cached_array(tmp_path / "cache-two"), cached_array(tmp_path / "cache-one"), atol=1e-5)
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert rounded(two_metrics) == rounded(one_metrics)
    assert split_rows(tmp_path / "two") == split_rows(tmp_path / "one")  # same seed, same split everywhere
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
    assert two.stdout.count("macro F1") == 1  # one report, from the main process
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache-one", "cache-two", "one", "two"]

    # A second launch finds the cache the first one wrote, on every process.
    again = launch(2, [*common, "--output-dir", str(tmp_path / "again")], tmp_path / "cache-two")
    assert json.loads((tmp_path / "again" / "run.json").read_text())["embeddings_cached"] is True
    assert again.stdout.count("macro F1") == 1


@pytest.mark.slow
def test_fine_tuning_and_scoring_on_two_processes(tiny_bert, odd_reviews, tmp_path, fifty_reviews):
    run = tmp_path / "lora"
    launch(2, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "lora", "--head", "linear", "--epochs", "1",
        "--data", str(odd_reviews), "--output-dir", str(run),
    ], tmp_path / "cache")

    info = json.loads((run / "run.json").read_text())
    assert info["processes"] == 2
    test_rows = [row for split, row in split_rows(run) if split == "test"]
    assert len(test_rows) == len(set(test_rows)) == info["data"]["sizes"]["test"]  # the whole split, once
    classifier = load_run(run)
    p_fake = classifier.predict_proba(fifty_reviews)
    assert p_fake.shape == (50,) and np.all((p_fake >= 0) & (p_fake <= 1))
    stored = pd.read_csv(run / "split_predictions.csv").query("split == 'test'")
    frame = pd.read_csv(odd_reviews)
    texts = frame.text.iloc[stored.row.to_numpy() - 1].tolist()  # rows count from 1, as in error messages
    rescored = classifier.predict_proba(texts, calibrated=False)
    np.testing.assert_allclose(rescored, stored.p_fake_raw.to_numpy(), atol=1e-5)

    # Scoring a file on two processes: each scores a shard of every chunk, the main one writes it all.
    scored = {}
    for processes in (1, 2):
        output = tmp_path / f"scored-{processes}.csv"
        launch(processes, ["predict", "--run", str(run), "--input", str(odd_reviews), "--output", str(output)], tmp_path / "cache")
        scored[processes] = pd.read_csv(output)
    assert len(scored[2]) == len(frame)
    assert scored[2].predicted_label.tolist() == scored[1].predicted_label.tolist()
    np.testing.assert_allclose(scored[2].predicted_p_fake, scored[1].predicted_p_fake, atol=1e-5)

    # Evaluating on a labelled file: scored in shards, written once, the same metrics as one process.
    evaluated = {}
    for processes in (1, 2):
        target = tmp_path / f"evaluation-{processes}"
        launch(processes, ["evaluate", "--run", str(run), "--data", str(odd_reviews), "--output-dir", str(target)], tmp_path / "cache")
        evaluated[processes] = json.loads((target / "metrics.json").read_text())
    assert evaluated[2]["data"]["n_examples"] == len(frame)
    assert rounded(evaluated[2]) == rounded(evaluated[1] | {"plots": evaluated[2]["plots"]})


@pytest.mark.parametrize("batches", ["--no-pack-sequences", "--pack-sequences"])
def test_full_fine_tuning_on_two_processes(batches, tiny_bert, odd_reviews, tmp_path):
    """Every trainable weight must get a gradient under DDP: BERT's unused pooler stays frozen.
    Packed batches (one row of reviews per process) train under DDP as padded ones do; one of the
    two averages its gradients in bfloat16, as bf16 training on GPUs does by default."""
    run = tmp_path / "full"
    gradient_dtype = "bfloat16" if batches == "--pack-sequences" else "float32"
    launch(2, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "full", "--head", "mlp", "--epochs", "1",
        "--data", str(odd_reviews), "--output-dir", str(run), batches, "--ddp-gradient-dtype", gradient_dtype,
    ], tmp_path / "cache")
    info = json.loads((run / "run.json").read_text())
    assert info["packed_sequences"] is (batches == "--pack-sequences")
    assert info["gradient_sync"]["gradient_dtype"] == gradient_dtype
    stored = pd.read_csv(run / "split_predictions.csv").query("split == 'test'")
    texts = pd.read_csv(odd_reviews).text.iloc[stored.row.to_numpy() - 1].tolist()
    rescored = load_run(run).predict_proba(texts, calibrated=False)
    np.testing.assert_allclose(rescored, stored.p_fake_raw.to_numpy(), atol=1e-5)


FSDP_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fsdp_full_finetune.yaml"

# accelerate (1.15) turns a launch with distributed_type FSDP into FSDP only on accelerators
# (AcceleratorState: MULTI_GPU, MULTI_XPU, ...); on the CPU it silently trains with DDP instead.
# FSDP2's fully_shard itself runs on the CPU over gloo: this launcher takes accelerate down the
# path it takes on GPUs (as AcceleratorState does there, PartialState learns the type too), then
# runs the CLI.
FSDP_ON_CPU = """
import accelerate.state as state
from accelerate.utils import DistributedType

accelerator_state_init = state.AcceleratorState.__init__


def init(self, *args, fsdp_plugin=None, **kwargs):
    accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


state.AcceleratorState.__init__ = init

from review_toolkit.cli import main

main()
"""


def test_full_fine_tuning_sharded_with_fsdp(tiny_bert, odd_reviews, tmp_path):
    """examples/fsdp_full_finetune.yaml, on the CPU: the run is whole and serves what was scored."""
    config = yaml.safe_load(FSDP_EXAMPLE.read_text(encoding="utf-8"))
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    config.update(use_cpu=True, mixed_precision="no", num_processes=2)  # no bf16 autocast on this CPU
    config_file = tmp_path / "fsdp_cpu.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    launcher = tmp_path / "fsdp_on_cpu.py"
    launcher.write_text(FSDP_ON_CPU, encoding="utf-8")

    run = tmp_path / "full"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
        "--main_process_port", str(free_port()), str(launcher),
    ]
    run_command(command, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "full", "--head", "linear",
        "--epochs", "1", "--data", str(odd_reviews), "--output-dir", str(run),
    ], tmp_path / "cache")

    info = json.loads((run / "run.json").read_text())
    assert info["processes"] == 2
    (checkpoint,) = (run / "checkpoints").glob("checkpoint-*")
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()  # trained sharded, not by DDP

    # What the run holds: the trained weights, gathered whole (as the checkpoint holds them).
    saved = {
        **{f"encoder.transformer.{name}": weight for name, weight in load_file(run / "encoder" / "model.safetensors").items()},
        **{f"head.{name}": weight for name, weight in load_file(run / "head.safetensors").items()},
    }
    checkpointed = load_file(checkpoint / "model.safetensors")
    assert checkpointed and set(checkpointed) <= set(saved)
    for name, weight in checkpointed.items():
        np.testing.assert_array_equal(saved[name].numpy(), weight.numpy(), err_msg=name)
    initial = load_file(Path(tiny_bert) / "model.safetensors")["embeddings.word_embeddings.weight"]
    trained = saved["encoder.transformer.embeddings.word_embeddings.weight"]
    assert trained.shape == initial.shape and not np.allclose(trained.numpy(), initial.numpy())

    # In a plain process it predicts what the processes scored.
    classifier = load_run(run)
    # FSDP's units (no layer classes in the example config): the layer classes BERT itself names.
    assert ReviewClassifierModel(classifier.encoder, classifier.head)._no_split_modules == ["BertEmbeddings", "BertLayer"]
    stored = pd.read_csv(run / "split_predictions.csv").query("split == 'test'")
    assert len(stored) == info["data"]["sizes"]["test"]
    texts = pd.read_csv(odd_reviews).text.iloc[stored.row.to_numpy() - 1].tolist()  # rows count from 1
    rescored = classifier.predict_proba(texts, calibrated=False)
    np.testing.assert_allclose(rescored, stored.p_fake_raw.to_numpy(), atol=1e-4)
