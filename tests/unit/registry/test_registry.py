"""Discovery rules users rely on: lazy lookup, helpful unknown names, broken and duplicate plugins, blocking.

Third-party plugins here are throwaway distributions (a ``.dist-info`` with
``entry_points.txt`` on ``sys.path``, see ``review_toolkit.testing.temporary_distribution``):
the registry sees them exactly as it sees installed packages. Nothing here loads a model.
"""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from review_toolkit import registry
from review_toolkit.cli import cli
from review_toolkit.config import TrainConfig
from review_toolkit.errors import PluginError
from review_toolkit.testing import temporary_distribution

GOOD_HEAD = '''
from review_toolkit.plugin_api.contracts import TorchHead
from torch import nn

class {cls}(TorchHead):
    description = "{description}"

    def build(self, in_features, num_labels):
        return nn.Linear(in_features, num_labels)
'''

INCOMPLETE_HEAD = '''
from review_toolkit.plugin_api.contracts import FittedHead

class HalfHead(FittedHead):
    description = "Fits, but cannot load what it saved."

    def fit(self, *args, **kwargs):
        raise NotImplementedError
'''

NOT_A_PLUGIN = '''
class Impostor:
    description = "Looks like a head, is not one."
'''

NO_DESCRIPTION = '''
from review_toolkit.plugin_api.contracts import TorchHead

class Mute(TorchHead):
    def build(self, in_features, num_labels):
        raise NotImplementedError
'''


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    monkeypatch.delenv(registry.BLOCK_ENVIRONMENT_VARIABLE, raising=False)
    registry.refresh()
    yield
    registry.refresh()


def plugins_output(*args: str) -> str:
    result = CliRunner().invoke(cli, ["plugins", *args])
    assert result.exit_code == 0, result.output
    return result.output


def row_of(output: str, kind: str, name: str) -> str:
    rows = [line for line in output.splitlines() if line.split()[:2] == [kind, name]]
    assert rows, f"no {kind} {name} row in:\n{output}"
    return rows[0]


# --------------------------------------------------------------------------- built-ins and names


def test_builtin_plugins_arrive_through_entry_points_with_their_distribution():
    for kind, names in {"method": {"frozen", "full", "lora", "qlora"}, "head": {"linear", "mlp", "logreg", "svm"}}.items():
        assert names <= set(registry.available(kind))
    plugin, source = registry.get("head", "logreg")
    assert plugin.name == "logreg"
    assert (source.kind, source.distribution) == ("head", "review_toolkit")
    assert source.version and source.entry_point.endswith(":LogregHead")


def test_unknown_name_suggests_the_nearest_and_lists_the_available_ones():
    with pytest.raises(PluginError) as caught:
        registry.get("head", "logrge")
    message = str(caught.value)
    assert "Unknown head 'logrge'" in message
    assert "Did you mean 'logreg'?" in message
    available = message.split("Available heads: ")[1]
    assert all(name in available for name in ("linear", "logreg", "mlp", "svm"))
    assert "review-toolkit plugins" in message


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(PluginError, match="kinds are: backbone, method, head"):
        registry.available("tokenizer")


def test_unknown_name_on_the_command_line_is_a_message_not_a_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--head", "mpl", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "Error: Unknown head 'mpl'. Did you mean 'mlp'?" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- broken plugins


def test_import_error_names_the_distribution_and_every_other_plugin_keeps_working(tmp_path):
    with temporary_distribution(
        "acme-broken", {"head": {"shiny": "acme_shiny:Shiny"}}, version="1.2.3",
        modules={"acme_shiny": "import acme_missing_dependency\n"}, directory=tmp_path,
    ):
        assert "shiny" in registry.available("head")  # listed without importing it
        assert "acme_shiny" not in sys.modules

        with pytest.raises(PluginError) as caught:
            registry.get("head", "shiny")
        message = str(caught.value)
        assert "'shiny' from distribution acme-broken 1.2.3 failed to import" in message
        assert "No module named 'acme_missing_dependency'" in message
        assert "REVIEW_TOOLKIT_BLOCK_PLUGINS=head:shiny" in message

        # One broken row; every other plugin listed with its description, exit status 0.
        output = plugins_output()
        assert "BROKEN" in row_of(output, "head", "shiny") and "acme-broken" in row_of(output, "head", "shiny")
        assert "Logistic regression" in row_of(output, "head", "logreg")
        assert "BROKEN" not in row_of(output, "method", "frozen")

        # Other compositions still resolve; asking for the broken one is a one-line error.
        assert registry.get("head", "logreg")[0].name == "logreg"
        result = CliRunner().invoke(cli, ["train", "--head", "shiny", "--output-dir", str(tmp_path / "run")])
        assert result.exit_code == 1
        assert "Error: The head plugin 'shiny' from distribution acme-broken 1.2.3 failed to import" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("source", "cls", "expected"),
    [
        (INCOMPLETE_HEAD, "HalfHead", "does not implement: load"),
        (NOT_A_PLUGIN, "Impostor", "is not a subclass of review_toolkit.plugin_api.contracts.Head"),
        (NO_DESCRIPTION, "Mute", "has no one-line `description`"),
    ],
    ids=["missing-method", "not-a-subclass", "no-description"],
)
def test_contract_violations_name_the_distribution(tmp_path, source, cls, expected):
    module = "acme_contract_" + tmp_path.name.replace("-", "_")
    with temporary_distribution(
        "acme-contract", {"head": {"odd": f"{module}:{cls}"}}, version="0.3.0", modules={module: source}, directory=tmp_path
    ):
        with pytest.raises(PluginError) as caught:
            registry.get("head", "odd")
        assert "head plugin 'odd' from distribution acme-contract 0.3.0" in str(caught.value)
        assert expected in str(caught.value)
        assert expected in row_of(plugins_output(), "head", "odd")
        assert registry.get("head", "svm")[0].name == "svm"


# --------------------------------------------------------------------------- duplicates


def test_duplicate_names_fail_naming_both_distributions_and_distribution_prefix_picks_one(tmp_path):
    one = GOOD_HEAD.format(cls="TwinHead", description="Twin from acme-one.")
    two = GOOD_HEAD.format(cls="TwinHead", description="Twin from acme-two.")
    with temporary_distribution(
        "acme-one", {"head": {"twin": "acme_one_twin:TwinHead"}}, version="1.0", modules={"acme_one_twin": one},
        directory=tmp_path / "one",
    ), temporary_distribution(
        "acme-two", {"head": {"twin": "acme_two_twin:TwinHead"}}, version="2.0", modules={"acme_two_twin": two},
        directory=tmp_path / "two",
    ):
        with pytest.raises(PluginError) as caught:
            registry.get("head", "twin")
        message = str(caught.value)
        assert "registered by more than one distribution (acme-one, acme-two)" in message
        assert "DISTRIBUTION:twin" in message

        plugin, source = registry.get("head", "acme-two:twin")
        assert (plugin.description, source.distribution, source.version) == ("Twin from acme-two.", "acme-two", "2.0")
        assert registry.get("head", "acme-one:twin")[1].distribution == "acme-one"
        with pytest.raises(PluginError, match="Unknown head 'acme-three:twin'"):
            registry.get("head", "acme-three:twin")

        # Both are listed, each with its distribution; the composer accepts the prefixed name.
        output = plugins_output()
        rows = [line for line in output.splitlines() if line.split()[:2] == ["head", "twin"]]
        assert len(rows) == 2 and any("acme-one" in r for r in rows) and any("acme-two" in r for r in rows)
        from review_toolkit.train.pipeline import Composition

        composition = Composition.resolve(TrainConfig(backbone="minilm", method="frozen", head="acme-one:twin"))
        assert composition.head.description == "Twin from acme-one."
        assert composition.sources[2].distribution == "acme-one"


def test_a_plugin_shadowing_a_builtin_name_is_a_duplicate_too(tmp_path):
    shadow = GOOD_HEAD.format(cls="ShadowHead", description="Not the real logreg.")
    with temporary_distribution(
        "acme-shadow", {"head": {"logreg": "acme_shadow:ShadowHead"}}, modules={"acme_shadow": shadow}, directory=tmp_path
    ):
        with pytest.raises(PluginError, match=r"\(acme-shadow, review_toolkit\)"):
            registry.get("head", "logreg")
        assert registry.get("head", "review_toolkit:logreg")[1].distribution == "review_toolkit"


def test_blocking_one_of_two_duplicates_picks_the_other(tmp_path, monkeypatch):
    one = GOOD_HEAD.format(cls="TwinHead", description="Twin from acme-one.")
    with temporary_distribution(
        "acme-one", {"head": {"twin": "acme_one_b:TwinHead"}}, modules={"acme_one_b": one}, directory=tmp_path / "one"
    ), temporary_distribution(
        "acme-two", {"head": {"twin": "acme_two_b:TwinHead"}}, modules={"acme_two_b": one}, directory=tmp_path / "two"
    ):
        monkeypatch.setenv(registry.BLOCK_ENVIRONMENT_VARIABLE, "acme-two:twin")
        assert registry.get("head", "twin")[1].distribution == "acme-one"


# --------------------------------------------------------------------------- blocking


@pytest.mark.parametrize("blocked", ["shiny", "head:shiny", "acme-broken:shiny", " head:shiny , other"])
def test_blocked_plugin_is_neither_imported_nor_offered(tmp_path, monkeypatch, blocked):
    module = "acme_blocked_" + tmp_path.name.replace("-", "_")
    with temporary_distribution(
        "acme-broken", {"head": {"shiny": f"{module}:Shiny"}}, modules={module: "raise RuntimeError('imported!')\n"},
        directory=tmp_path,
    ):
        monkeypatch.setenv(registry.BLOCK_ENVIRONMENT_VARIABLE, blocked)
        assert "shiny" not in registry.available("head")
        with pytest.raises(PluginError, match="'shiny' from acme-broken is blocked by REVIEW_TOOLKIT_BLOCK_PLUGINS"):
            registry.get("head", "shiny")
        row = row_of(plugins_output(), "head", "shiny")
        assert "BLOCKED" in row and "acme-broken" in row
        assert module not in sys.modules  # blocked means never imported: its import-time code never ran
        assert registry.get("head", "logreg")[0].name == "logreg"


def test_blocking_a_builtin_by_kind_and_name(monkeypatch):
    monkeypatch.setenv(registry.BLOCK_ENVIRONMENT_VARIABLE, "head:svm")
    assert "svm" not in registry.available("head")
    with pytest.raises(PluginError, match="blocked"):
        registry.get("head", "svm")
    with pytest.raises(PluginError, match="Unknown head 'svn'") as caught:
        registry.get("head", "svn")
    assert "svm" not in str(caught.value).split("Available heads: ")[1]
