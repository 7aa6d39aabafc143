"""``review-toolkit evaluate``: metrics, plots, calibration and thresholds of a run."""

from __future__ import annotations

from typing import Any

import click

from review_toolkit.cli.group import backend_option, is_main_process, quiet_libraries, stops_on_interrupt


@click.command()
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
@backend_option("What embeds --data")
@click.option("--allow-unverified", is_flag=True, help="Evaluate a run that does not match its manifest (it is then not re-sealed).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@stops_on_interrupt(lambda interrupt, **_: "Interrupted; no evaluation output was written.")
def evaluate(run_dir: str, label_map: str | None, no_save: bool, quiet: bool, **options: Any) -> None:
    """Metrics, classification report and plots (confusion matrix, ROC, precision-recall, calibration).

    Calibration and threshold options are fitted on the run's validation split and, unless
    --no-save, stored in the run: `predict` and `load_run` then use them.
    """
    quiet_libraries()
    from review_toolkit.data import parse_label_map
    from review_toolkit.evaluation.run_evaluation import evaluate_run, summary_lines

    result = evaluate_run(run_dir, label_map=parse_label_map(label_map), save=not no_save, progress=not quiet, **options)
    if not is_main_process():
        return  # the main process of a multi-GPU launch wrote the outputs and speaks for all
    click.echo(result.report)
    for line in summary_lines(result):
        click.echo(line)
