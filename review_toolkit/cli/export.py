"""``review-toolkit export``: write a run's encoder as ONNX (optionally int8) for fast CPU scoring."""

from __future__ import annotations

import click

from review_toolkit.cli.group import quiet_libraries, stops_on_interrupt


@click.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--format", "export_format", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="What to export to.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Store int8 weights (ONNX Runtime dynamic quantization): smaller and faster, slightly different scores.")
@click.option("--skip-test-split", is_flag=True, help="Do not score the run's test split with the export (it measures the F1 change).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@stops_on_interrupt(lambda interrupt, run_dir, **_: f"Interrupted; {run_dir} was left as it was (no export written).")
def export(run_dir: str, export_format: str, quantize: str | None, skip_test_split: bool, quiet: bool) -> None:
    """Write the run's encoder (transformer, pooling, projection) as ONNX into RUN/onnx/.

    `predict`, `evaluate --data`, `serve` and `load_run` then score with it through ONNX Runtime
    when they run on a CPU (`--backend torch` keeps the PyTorch model). The parity with the
    PyTorch model is measured on sample reviews and, unless --skip-test-split, on the run's test
    split (macro F1 before and after); export.json and the model card record it. Needs the
    `onnx` extra: pip install 'review_toolkit[onnx]'.
    """
    quiet_libraries()
    from review_toolkit.runs.exporting import export_run, record_test_parity

    precision = quantize or "fp32"
    record = export_run(run_dir, precision=precision)
    parity = record["parity"]
    click.echo(
        f"Exported {run_dir}/onnx/{record['model_file']} ({precision}, opset {record['opset']}). On "
        f"{parity['texts']} sample reviews: max |p_fake difference| {parity['max_abs_p_fake_difference']:.2g}, "
        f"min cosine {parity['min_cosine']:.4f}, labels changed {parity['labels_changed']}."
    )
    if skip_test_split:
        return
    from review_toolkit.evaluation.backend_parity import test_split_parity
    from review_toolkit.runs.layout import require_run_directory
    from review_toolkit.runs.loader import load_run

    classifier = load_run(run_dir, device="cpu", backend="onnx")
    result = test_split_parity(require_run_directory(run_dir), classifier, progress=not quiet)
    record_test_parity(run_dir, result)
    if not result["measured"]:
        click.echo(f"Test split not scored: {result['reason']}.", err=True)
        return
    click.echo(
        f"Test split ({result['n_examples']} reviews): macro F1 {result['f1_macro']:.4f} with {classifier.scored_with}, "
        f"{result['f1_macro_torch']:.4f} with torch (change {result['f1_macro_change']:+.4f}); "
        f"{result['labels_changed']} labels changed, max |p_fake difference| {result['max_abs_p_fake_difference']:.2g}."
    )

