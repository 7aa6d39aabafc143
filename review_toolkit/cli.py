"""The ``review-toolkit`` command line (also ``python -m review_toolkit``).

Every problem the user can fix is a ``ReviewToolkitError`` and ends as a
one-screen ``Error: ...`` message with exit status 1, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from review_toolkit.errors import ReviewToolkitError

EXIT_INTERRUPTED = 130

# bitsandbytes warns on import, on CPUs with AVX512-BF16, that an optional kernel package is
# missing; the toolkit does not use that inference kernel (see adapters.keep_cpu_weights_trainable).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


class FriendlyGroup(click.Group):
    """Turns the toolkit's own errors into click errors: message, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReviewToolkitError as error:
            raise click.ClickException(str(error)) from error


def _quiet_libraries(progress: bool = True) -> None:
    """Library chatter (hub warnings, weight-loading reports) hides the toolkit's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    if not progress:  # --quiet: no "Loading weights" / "Writing model shards" bars either
        transformers.utils.logging.disable_progress_bar()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    if int(os.environ.get("RANK", "0")) > 0:  # another process of a multi-GPU launch: the main one speaks
        logging.getLogger("review_toolkit").setLevel(logging.ERROR)
        transformers.utils.logging.disable_progress_bar()


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="review_toolkit")
def cli() -> None:
    """Train, evaluate and serve fake-review classifiers from pluggable parts."""


def _split_list(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@click.option("--backbone", help="Backbone plugin (default: minilm).")
@click.option("--method", help="Method plugin: frozen, full, lora, qlora, ... (default: frozen).")
@click.option("--head", help="Head plugin (default: logreg for frozen, linear for training methods).")
@click.option("--model", help="Checkpoint for the backbone: hub id or local directory.")
@click.option("--trust-remote-code", is_flag=True, default=None, help="Allow model code downloaded with the checkpoint to run.")
@click.option("--data", help="Labelled reviews: CSV, TSV, JSON Lines, Parquet or a saved datasets directory (default: bundled sample).")
@click.option("--text-column", help="Column holding the review text (default: text).")
@click.option("--label-column", help="Column holding the label (default: label).")
@click.option("--label-map", help="Explicit label mapping, e.g. 'CG=fake,OR=real'.")
@click.option("--split-column", help="Column saying train / validation / test for each row.")
@click.option("--validation-data", help="A separate validation file.")
@click.option("--test-data", help="A separate test file.")
@click.option("--seed", type=int, help="Random seed for the split and training (default: 42).")
@click.option("--output-dir", help="Run directory to create (default: runs/BACKBONE-METHOD-HEAD).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing run directory.")
@click.option("--cache-dir", help="Where frozen embeddings are cached (default: ~/.cache/review_toolkit).")
@click.option("--epochs", type=float, help="Training epochs (default: 4).")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--learning-rate", type=float, help="Learning rate (default: the method's own).")
@click.option("--batch-size", type=int, help="Training batch size per device (default: 32).")
@click.option("--gradient-accumulation-steps", type=int, help="Batches per optimizer step (default: 1).")
@click.option("--max-length", type=int, help="Truncate reviews to this many tokens (default: the backbone's maximum).")
@click.option("--max-tokens-per-batch", type=int, help="Token budget of a length-sorted batch (default: 4096; 0: random batches of --batch-size).")
@click.option("--pad-to-max-length", is_flag=True, default=None, help="Pad every review to --max-length (the research recipe; slow).")
@click.option("--pack-sequences/--no-pack-sequences", default=None, help="Fine-tuning: concatenate each batch's reviews into one row, no padding computed (default: on for bf16 GPU training of bert and gte encoders).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None, help="Fine-tuning on packed batches: replay each step's encoder forward and backward from CUDA graphs, one launch instead of thousands (default: on wherever possible: packed batches on one GPU, not compiled or checkpointed).")
@click.option("--gradient-checkpointing", is_flag=True, default=None, help="Recompute activations in backward: far less memory, ~30% more compute.")
@click.option("--compile", is_flag=True, default=None, help="Fine-tuning: torch.compile each encoder layer. Faster steps on GPUs with large batches (examples/gpu_compiled.yaml); compiling takes a minute or so.")
@click.option("--optimizer", help="TrainingArguments optim name (default: the method's own).")
@click.option("--lr-scheduler", help="Learning-rate schedule: linear, cosine, ... (default: linear).")
@click.option("--early-stopping-patience", type=int, help="Epochs without validation F1 gain before stopping (default: 2; 0 turns it off).")
@click.option("--class-weight", type=click.Choice(["balanced"]), help="Weight classes inversely to their frequency.")
@click.option("--lora-r", type=int, help="LoRA rank (default: 16).")
@click.option("--lora-alpha", type=int, help="LoRA alpha (default: 32).")
@click.option("--lora-dropout", type=float, help="LoRA dropout (default: 0.05).")
@click.option("--lora-targets", help="Comma-separated module names for LoRA (default: the backbone's).")
@click.option("--resume-from", help="Continue training from a run directory or checkpoint (for more epochs, or after an interruption).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_file: str | None, quiet: bool, **options: Any) -> None:
    """Train a classifier and write its run directory."""
    _quiet_libraries(progress=not quiet)
    from review_toolkit.config import build_config
    from review_toolkit.data import parse_label_map
    from review_toolkit.pipeline import default_output_dir, train as run_training

    options["label_map"] = parse_label_map(options["label_map"])
    options["lora_targets"] = _split_list(options["lora_targets"])
    config = build_config(config_file, options)
    from review_toolkit.rundir import describe_interrupted_run, run_of_staging
    from review_toolkit.signals import graceful_interruption

    if not config.output_dir and config.resume_from and run_of_staging(config.resume_from):
        config.output_dir = str(run_of_staging(config.resume_from))  # finish RUN.partial as RUN
    output_dir = config.output_dir or str(default_output_dir(config))
    config.output_dir = output_dir

    try:
        # SIGINT / SIGTERM during training: checkpoint after the current step, then stop.
        with graceful_interruption():
            result = run_training(config, progress=not quiet)
    except KeyboardInterrupt as interrupt:
        click.echo("\n" + describe_interrupted_run(output_dir, interrupt), err=True)
        sys.exit(EXIT_INTERRUPTED)
    from review_toolkit import distributed

    if distributed.is_main_process():  # one report, not one per process of a multi-GPU launch
        _print_summary(result)


def _print_summary(result: Any) -> None:
    info, metrics = result.info, result.metrics
    click.echo("")
    click.echo(f"{info['backbone']} + {info['method']} + {info['head']} on {info['data']['source']}")
    click.echo(f"test split: {info['data']['sizes']['test']} reviews")
    click.echo("")
    click.echo(result.report)
    auc = f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "n/a"
    click.echo(f"macro F1 {metrics['f1_macro']:.4f}  accuracy {metrics['accuracy']:.4f}  ROC AUC {auc}")
    click.echo(f"trained in {info['training_seconds']:.1f} s; run saved to {result.run_dir}")


_IO_FORMATS = ["csv", "tsv", "jsonl"]


@cli.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--text", "texts", multiple=True, help="A review to score; repeat for several.")
@click.option("--input", "input_path", help="Reviews to score: a CSV, TSV or JSON Lines file, or '-' for standard input.")
@click.option("--output", "output_path", help="Write scored rows here (.csv, .tsv or .jsonl; default: standard output).")
@click.option("--text-column", default="text", show_default=True, help="Column (JSON key) holding the review text.")
@click.option("--input-format", type=click.Choice(_IO_FORMATS), help="Format of --input (default: its extension; guessed on standard input).")
@click.option("--output-format", type=click.Choice(_IO_FORMATS), help="Format of the output (default: --output's extension, else the input's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Reviews per forward pass (default: 64 on GPU, 16 on CPU).")
@click.option("--allow-unverified", is_flag=True, help="Load a run that does not match its manifest (still never unpickles).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code that comes with the run's checkpoint to run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(
    run_dir: str,
    texts: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    text_column: str,
    input_format: str | None,
    output_format: str | None,
    batch_size: int | None,
    allow_unverified: bool,
    trust_remote_code: bool,
    quiet: bool,
) -> None:
    """Score reviews: one row per review with its original columns, `label` and `p_fake`.

    Input is streamed in chunks in constant memory, rows come out in input order, and an --output
    file appears only once every row is written. `label` uses the run's decision threshold on the
    calibrated `p_fake` (see `evaluate --threshold-for / --target-precision`).
    """
    _quiet_libraries()
    from review_toolkit.prediction import (
        STDIO,
        ReviewReader,
        format_of,
        predict_to_output,
        return_freed_memory_promptly,
        sniff_stdin,
        texts_reader,
    )
    from review_toolkit.signals import graceful_interruption

    if bool(texts) == bool(input_path):
        raise click.UsageError("Give the reviews either with --text (repeatable) or with --input FILE ('-' for standard input).")
    if input_path == STDIO and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every process reads the whole input and scores its shard of each chunk; one stream
        # cannot be read by all of them.
        raise click.UsageError("--input - (standard input) works in a single process; give a file under a multi-GPU launch.")
    if texts:
        reader = texts_reader(list(texts))
    elif input_path == STDIO:
        stream, detected = sniff_stdin(click.get_binary_stream("stdin"), input_format)
        reader = ReviewReader(stream, detected, text_column, "standard input")
    else:
        reader = ReviewReader(input_path, format_of(input_path, "--input-format", input_format), text_column, input_path)
    if output_format is None:
        output_format = format_of(output_path, "--output-format", None) if output_path not in (None, STDIO) else (
            "csv" if texts else reader.format
        )

    def load() -> Any:
        from review_toolkit.pipeline import load_run

        return load_run(run_dir, allow_unverified=allow_unverified, trust_remote_code=trust_remote_code)

    return_freed_memory_promptly()  # constant memory over any number of rows
    try:
        with graceful_interruption():  # SIGTERM too ends in the clean-up that removes a partial output
            summary = predict_to_output(
                load,
                reader,
                output_path,
                output_format,
                stdout=click.get_text_stream("stdout"),
                batch_size=batch_size,
                progress=not quiet,
            )
    except KeyboardInterrupt:
        kept = f"; {output_path} was not written" if output_path not in (None, STDIO) else ""
        click.echo(f"\nInterrupted{kept}.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    from review_toolkit import distributed

    if not distributed.is_main_process():
        return  # the main process of a multi-GPU launch wrote the output and speaks for all
    for note in summary.notes:
        click.echo(note, err=True)
    if output_path not in (None, STDIO):
        click.echo(f"{summary.rows} reviews scored -> {summary.output}", err=True)


@cli.command()
def plugins() -> None:
    """List every installed plugin: kind, name, distribution, version and description."""
    from review_toolkit.registry import list_plugins

    rows = list_plugins()
    if not rows:
        click.echo("No plugins installed. Reinstall review_toolkit to get the built-in ones.")
        return
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")
    table = [header]
    for row in rows:
        status = "BLOCKED" if row.blocked else (f"BROKEN: {row.error}" if row.error else row.description)
        table.append((row.source.kind, row.source.name, row.source.distribution, row.source.version, status))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths)) + "  " + line[4])


@cli.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--data", help="Labelled reviews to evaluate on (default: the run's own test split).")
@click.option("--text-column", help="Text column of --data (default: the run's).")
@click.option("--label-column", help="Label column of --data (default: the run's).")
@click.option("--label-map", help="Label mapping for --data, e.g. 'CG=fake,OR=real' (default: the run's).")
@click.option("--output-dir", help="Folder for the outputs (default: RUN/evaluation/test, or RUN/evaluation/<data file name>).")
@click.option("--calibration", type=click.Choice(["temperature", "platt", "none"]), help="Refit calibration on the validation split.")
@click.option("--threshold-for", type=click.Choice(["f1", "accuracy"]), help="Choose the threshold with the best macro F1 (or accuracy) on validation.")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True), help="Choose the lowest threshold reaching this precision for 'fake' on validation.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Set the decision threshold by hand.")
@click.option("--no-save", is_flag=True, help="Try a calibration or threshold without storing it in the run.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Reviews per forward pass with --data (default: 64 on GPU, 16 on CPU).")
@click.option("--allow-unverified", is_flag=True, help="Evaluate a run that does not match its manifest (it is then not re-sealed).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(run_dir: str, label_map: str | None, no_save: bool, quiet: bool, **options: Any) -> None:
    """Metrics, classification report and plots (confusion matrix, ROC, precision-recall, calibration).

    Calibration and threshold options are fitted on the run's validation split and, unless
    --no-save, stored in the run: `predict` and `load_run` then use them.
    """
    _quiet_libraries()
    from review_toolkit.data import parse_label_map
    from review_toolkit.evaluation import evaluate_run, summary_lines

    from review_toolkit.signals import graceful_interruption

    try:
        with graceful_interruption():
            result = evaluate_run(
                run_dir, label_map=parse_label_map(label_map), save=not no_save, progress=not quiet, **options
            )
    except KeyboardInterrupt:
        click.echo("\nInterrupted; no evaluation output was written.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    from review_toolkit import distributed

    if not distributed.is_main_process():
        return  # the main process of a multi-GPU launch wrote the outputs and speaks for all
    click.echo(result.report)
    for line in summary_lines(result):
        click.echo(line)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--output-dir", help="Folder for leaderboard.md, .csv and .png (default: comparison/ beside the runs).")
def compare(paths: tuple[str, ...], output_dir: str | None) -> None:
    """Leaderboard of runs (run directories, or folders holding them), best macro F1 first."""
    from review_toolkit.compare import compare_runs, markdown_table

    rows, target = compare_runs(paths, output_dir)
    click.echo(markdown_table(rows))
    click.echo(f"leaderboard written to {target} (leaderboard.md, leaderboard.csv, leaderboard.png)")


@cli.command("train-many")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--output-dir", help="Parent folder of the runs (default: the plan's output_dir, else runs/<plan name>).")
@click.option("--data", help="Data for every run, overriding the plan's shared data.")
@click.option("--cache-dir", help="Embedding cache for every run, overriding the plan's.")
@click.option("--overwrite", is_flag=True, help="Train runs whose folders exist again, replacing them.")
@click.option("--skip-existing", is_flag=True, help="Keep finished runs whose folders exist; train the rest.")
@click.option("--stop-on-error", is_flag=True, help="Stop at the first failed run (default: train the others).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_many(
    plan_file: str,
    output_dir: str | None,
    data: str | None,
    cache_dir: str | None,
    overwrite: bool,
    skip_existing: bool,
    stop_on_error: bool,
    quiet: bool,
) -> None:
    """Train every run of a YAML plan (shared options + a list of runs), then print the comparison."""
    from review_toolkit.compare import compare_runs, markdown_table
    from review_toolkit.plan import load_plan, run_plan

    from review_toolkit.signals import graceful_interruption

    planned = load_plan(plan_file, output_dir=output_dir, overrides={"data": data, "cache_dir": cache_dir})
    try:
        with graceful_interruption():
            outcome = run_plan(
                planned,
                overwrite=overwrite,
                skip_existing=skip_existing,
                stop_on_error=stop_on_error,
                quiet=quiet,
                echo=lambda line: click.echo(line, err=True),
            )
    except KeyboardInterrupt:
        click.echo("\nInterrupted. Runs already finished are kept; run the plan again with --skip-existing.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finished = outcome.trained + outcome.skipped
    if finished:
        rows, target = compare_runs(finished, planned[0].output_dir.parent / "comparison")
        click.echo("")
        click.echo(markdown_table(rows))
        click.echo(f"leaderboard written to {target}")
    if outcome.failed:
        failures = "; ".join(f"{name}: {why}" for name, why in outcome.failed)
        raise click.ClickException(f"{len(outcome.failed)} of {len(planned)} runs failed: {failures}")


from review_toolkit.serve.command import serve; cli.add_command(serve)  # noqa: E402,E702  (FastAPI loads only when it runs)


def main() -> None:
    cli(prog_name="review-toolkit")


if __name__ == "__main__":
    main()
