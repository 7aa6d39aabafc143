"""The ``review-toolkit`` group, ``main()``, and what every command shares.

Every problem the user can fix is a ``ReviewToolkitError`` and ends as a one-line
``Error: ...`` message with exit status 1, never a traceback. Commands live in modules of their
own, imported when run or listed, and import model libraries only when they run:
``review-toolkit --help`` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from review_toolkit.errors import ReviewToolkitError
from review_toolkit.runtime.os_errors import describe_os_error
from review_toolkit.runtime.quiet import quiet_process

EXIT_INTERRUPTED = 130

# bitsandbytes warns on import, on CPUs with AVX512-BF16, that an optional kernel package is
# missing; the toolkit does not use that inference kernel (see adapters.keep_cpu_weights_trainable).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# Command name -> "module:attribute" of its click command, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "train": "review_toolkit.cli.train:train",
    "predict": "review_toolkit.cli.predict:predict",
    "plugins": "review_toolkit.cli.plugins:plugins",
    "evaluate": "review_toolkit.cli.evaluate:evaluate",
    "compare": "review_toolkit.cli.compare:compare",
    "ensemble": "review_toolkit.cli.ensemble:ensemble",
    "train-many": "review_toolkit.cli.train_many:train_many",
    "tune": "review_toolkit.cli.tune:tune",
    "serve": "review_toolkit.cli.serve:serve",
    "push": "review_toolkit.cli.push:push",
    "export": "review_toolkit.cli.export:export",
}


class ToolkitGroup(click.Group):
    """Loads each command from its module; turns the toolkit's errors, and the operating system's, into ``Error: ...``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReviewToolkitError as error:
            raise click.ClickException(str(error)) from error
        except OSError as error:  # full disk, read-only, permissions, a path through a file: one line
            raise click.ClickException(describe_os_error(error)) from error


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="review_toolkit")
def cli() -> None:
    """Train, evaluate and serve fake-review classifiers from pluggable parts."""


def main() -> None:
    cli(prog_name="review-toolkit")


def quiet_libraries(progress: bool = True) -> None:
    """Library chatter (hub warnings, weight-loading reports) hides the toolkit's own output."""
    quiet_process(progress)


Function = TypeVar("Function", bound=Callable[..., Any])


def stops_on_interrupt(explain: Callable[..., str]) -> Callable[[Function], Function]:
    """Run the function under ``graceful_interruption``; on SIGINT / SIGTERM print what became of
    the work and exit with status 130.

    ``explain(interrupt, **arguments)`` gets the interrupt and the function's arguments by name
    and returns the message (where the checkpoint is, that no output was written, ...).
    """

    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            from review_toolkit.runtime.interrupts import graceful_interruption

            try:
                with graceful_interruption():
                    return function(*args, **kwargs)
            except KeyboardInterrupt as interrupt:
                arguments = signature.bind(*args, **kwargs).arguments
                click.echo("\n" + explain(interrupt, **arguments), err=True)
                sys.exit(EXIT_INTERRUPTED)

        return run  # type: ignore[return-value]

    return decorate


def is_main_process() -> bool:
    """False in the other processes of a multi-GPU launch: the main one writes and speaks for all."""
    from review_toolkit.runtime import distributed  # lazy: imports torch

    return distributed.is_main_process()


class LazyChoice(click.Choice):
    """A choice among values that a heavier module lists, imported only to show or check them."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load = load
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        return tuple(self._load())


def _backends() -> tuple[str, ...]:
    from review_toolkit.inference.onnx_backend import BACKENDS

    return BACKENDS


def backend_option(what: str = "What embeds") -> Callable[[Function], Function]:
    """``--backend`` of the commands that score: the PyTorch model, the run's ONNX export, or auto."""
    return click.option(
        "--backend", type=LazyChoice(_backends), default="auto", show_default=True,
        help=f"{what}: the PyTorch model, the run's ONNX export (review-toolkit export), or auto: the export on a "
        "CPU when the run has one.",
    )
