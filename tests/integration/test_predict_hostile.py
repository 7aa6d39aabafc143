"""``predict`` given hostile input: no input field is ever overwritten, errors name the right row,
an existing output file is replaced only on request.

Every failure runs the real command (click's CliRunner on ``review_toolkit.cli.cli``): exit 1,
one ``Error:`` line, no traceback, no output file (or the old one untouched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit.cli import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def predict(run: Path, *arguments: str, stdin: str | None = None):
    return CliRunner().invoke(cli, ["predict", "--run", str(run), "--quiet", *arguments], input=stdin)


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_stdin_record_with_a_label_key_after_the_first_is_not_overwritten(tiny_frozen_run):
    # The second record has a `label` of its own: names come from every key of the first chunk.
    result = predict(tiny_frozen_run, "--input", "-", stdin='{"text":"good"}\n{"text":"bad","label":"x"}\n')
    assert result.exit_code == 0, result.output
    scored = records(result.stdout)
    assert "label" not in scored[0] and scored[1]["label"] == "x"
    assert all(set(r) >= {"predicted_label", "predicted_p_fake"} for r in scored)
    assert "written as 'predicted_label'" in result.stderr


def test_stdin_record_past_the_first_chunk_with_a_chosen_name_is_refused(tiny_frozen_run, tmp_path):
    from review_toolkit.data.formats import CHUNK_ROWS

    lines = [json.dumps({"text": f"review {i}"}) for i in range(CHUNK_ROWS)] + ['{"text":"late","p_fake":0.5}']
    output = tmp_path / "scored.jsonl"
    result = predict(tiny_frozen_run, "--input", "-", "--output", str(output), stdin="\n".join(lines) + "\n")
    assert_one_error_line(result, "standard input", f"line {CHUNK_ROWS + 1}", "'p_fake'", "Nothing is overwritten")
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_file_with_a_label_key_in_a_late_record_renames_for_every_record(tiny_frozen_run, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text":"good"}\n{"text":"bad","label":"x"}\n', encoding="utf-8")
    result = predict(tiny_frozen_run, "--input", str(source))
    assert result.exit_code == 0, result.output
    scored = records(result.stdout)
    assert scored[1]["label"] == "x" and all("predicted_p_fake" in r for r in scored)


def test_input_holding_both_name_pairs_is_refused(tiny_frozen_run, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("text,label,predicted_p_fake\ngood,real,0.1\n", encoding="utf-8")
    result = predict(tiny_frozen_run, "--input", str(source))
    assert_one_error_line(result, str(source), "'label'", "'predicted_p_fake'", "Rename")


def test_blank_csv_text_names_its_row_and_line(tiny_frozen_run, tmp_path):
    source = tmp_path / "in.csv"
    # One column; row 3 (line 5: the quoted review of row 1 spans two lines) is a quoted empty text,
    # which pandas reads as a row where a blank line would be skipped.
    source.write_text('text\n"two\nlines"\nfine\n""\nok\n', encoding="utf-8")
    result = predict(tiny_frozen_run, "--input", str(source))
    assert_one_error_line(result, str(source), "row 3 (line 5 of the file)")


def test_existing_output_is_kept_unless_overwrite(tiny_frozen_run, tmp_path):
    output = tmp_path / "scored.csv"
    output.write_text("precious\n", encoding="utf-8")
    result = predict(tiny_frozen_run, "--text", "works well", "--output", str(output))
    assert_one_error_line(result, str(output), "--overwrite")
    assert output.read_text(encoding="utf-8") == "precious\n"

    result = predict(tiny_frozen_run, "--text", "works well", "--output", str(output), "--overwrite")
    assert result.exit_code == 0, result.output
    assert output.read_text(encoding="utf-8").startswith("text,label,p_fake")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.csv"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU, --compile compiles")
def test_compile_on_a_cpu_is_refused_naming_the_option(tiny_frozen_run):
    result = predict(tiny_frozen_run, "--text", "Great product", "--compile")
    assert "compile" in assert_one_error_line(result, "CUDA GPUs", "--compile")
    assert result.stdout == ""
