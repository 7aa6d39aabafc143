"""``review-toolkit predict``: score reviews with a trained run, streaming any number of rows."""

from __future__ import annotations

import os

import click

from review_toolkit.cli.group import LazyChoice, backend_option, is_main_process, quiet_libraries, stops_on_interrupt

STDIO = "-"


def _input_formats() -> tuple[str, ...]:
    from review_toolkit.data.formats import FILE_FORMAT_NAMES

    return FILE_FORMAT_NAMES


def _output_formats() -> tuple[str, ...]:
    from review_toolkit.data.formats import OUTPUT_FORMAT_NAMES

    return OUTPUT_FORMAT_NAMES


def _interrupted(interrupt: KeyboardInterrupt, output_path: str | None, **_: object) -> str:
    kept = f"; {output_path} was not written" if output_path not in (None, STDIO) else ""
    return f"Interrupted{kept}."


@click.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--text", "texts", multiple=True, help="A review to score; repeat for several.")
@click.option("--input", "input_path", help="Reviews to score: a CSV, TSV, JSON Lines, JSON or Parquet file, or '-' for standard input.")
@click.option("--output", "output_path", help="Write scored rows here (.csv, .tsv or .jsonl; default: standard output). An existing file is replaced only with --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace the --output file if it exists.")
@click.option("--text-column", help="Column (JSON key) holding the review text (default: the run's own, as trained).")
@click.option("--input-format", type=LazyChoice(_input_formats), help="Format of --input (default: its extension; guessed on standard input).")
@click.option("--output-format", type=LazyChoice(_output_formats), help="Format of the output (default: --output's extension, else the input's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Reviews per forward pass (default: 64 on GPU, 16 on CPU).")
@backend_option()
@click.option("--allow-unverified", is_flag=True, help="Load a run that does not match its manifest (still never unpickles).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code that comes with the run's checkpoint to run.")
@click.option("--compile", "compile_encoder", is_flag=True, help="Compile the encoder's layers first (GPUs only): faster scoring of large inputs, after 10-30 s of compiling.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@stops_on_interrupt(_interrupted)  # SIGTERM too ends in the clean-up that removes a partial output
def predict(
    run_dir: str,
    texts: tuple[str, ...],
    input_path: str | None,
    output_path: str | None,
    overwrite: bool,
    text_column: str | None,
    input_format: str | None,
    output_format: str | None,
    batch_size: int | None,
    backend: str,
    allow_unverified: bool,
    trust_remote_code: bool,
    compile_encoder: bool,
    quiet: bool,
) -> None:
    """Score reviews: one row per review with its original columns, `label` and `p_fake`.

    Input is streamed in chunks in constant memory, rows come out in input order, and an --output
    file appears only once every row is written. `label` uses the run's decision threshold on the
    calibrated `p_fake` (see `evaluate --threshold-for / --target-precision`).

    An input column is never overwritten: when the input already has a `label` or `p_fake` column
    (in any row of a file; in the first 1,024 records of standard input), the predictions are
    written as `predicted_label` and `predicted_p_fake` for every row; when it has those too, or
    a later record of standard input has a name already chosen, the command stops with an error.
    """
    if bool(texts) == bool(input_path):
        raise click.UsageError("Give the reviews either with --text (repeatable) or with --input FILE ('-' for standard input).")
    if input_path == STDIO and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every process reads the whole input and scores its shard of each chunk; one stream
        # cannot be read by all of them.
        raise click.UsageError("--input - (standard input) works in a single process; give a file under a multi-GPU launch.")
    quiet_libraries()
    from review_toolkit.data.streams import ReviewReader, output_format_for, texts_reader
    from review_toolkit.inference.scoring import predict_to_output, return_freed_memory_promptly

    if text_column is None:
        from review_toolkit.runs.layout import trained_text_column

        text_column = trained_text_column(run_dir)
    if texts:
        reader = texts_reader(list(texts))
    elif input_path == STDIO:
        reader = ReviewReader.of_stdin(click.get_binary_stream("stdin"), text_column, input_format)
    else:
        reader = ReviewReader.of_file(input_path, text_column, input_format)
    output_format = output_format_for(output_path, output_format, None if texts else reader.format)
    if reader.note and is_main_process():
        click.echo(reader.note, err=True)

    loaded: list[object] = []

    def load() -> object:
        from review_toolkit.runs.loader import load_run
        from review_toolkit.runtime.startup import long_lived_objects

        with long_lived_objects():
            classifier = load_run(run_dir, allow_unverified=allow_unverified, trust_remote_code=trust_remote_code, backend=backend)
        if compile_encoder:
            classifier.compile_encoder()
        loaded.append(classifier)
        return classifier

    return_freed_memory_promptly()  # constant memory over any number of rows
    summary = predict_to_output(
        load,
        reader,
        output_path,
        output_format,
        stdout=click.get_text_stream("stdout"),
        batch_size=batch_size,
        progress=not quiet,
        overwrite=overwrite,
    )
    if not is_main_process():
        return  # the main process of a multi-GPU launch wrote the output and speaks for all
    for note in summary.notes:
        click.echo(note, err=True)
    if output_path not in (None, STDIO):
        click.echo(f"{summary.rows} reviews scored with {loaded[0].scored_with} -> {summary.output}", err=True)
