"""How a run names its base checkpoint: a Hub id as it is, a local folder relative to the run."""

from __future__ import annotations

from review_toolkit.runtime.hub import is_hub_id, portable_checkpoint_name


def test_hub_ids_stay_as_they_are(tmp_path):
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased", "google/flan-t5-small"):
        assert is_hub_id(name) and portable_checkpoint_name(name, tmp_path) == name


def test_local_folders_are_named_relative_to_the_run(tmp_path, monkeypatch):
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    run = tmp_path / "runs" / "run"
    assert portable_checkpoint_name(str(model), run / "adapter") == "../../../models/tiny"
    assert portable_checkpoint_name(str(model), run) == "../../models/tiny"
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("models/tiny")  # exists here: a folder, not a Hub id
    assert portable_checkpoint_name("models/tiny", run) == "../../models/tiny"
    assert not is_hub_id("./tiny") and not is_hub_id("~/tiny") and not is_hub_id("/abs/tiny")
