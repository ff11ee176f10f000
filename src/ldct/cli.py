"""The ``ldct`` command. Thin: each sub-command lives in ``ldct.commands.<name>`` and calls the library.

User mistakes raise :class:`ldct.errors.LdctError`; :func:`main` prints them as one line on stderr
(``ldct: error: <file>: <problem>``) and exits with code 2, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ldct.errors import LdctError

app = typer.Typer(
    name="ldct",
    help="Low-dose CT denoising: read CT in HU, simulate low dose, train, evaluate, denoise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module defines ``register(app)``; listed explicitly (no auto-import by file name).
COMMAND_MODULES = [
    "ldct.commands.sample",  # sample
    "ldct.commands.io_cmds",  # info, convert, preview
    "ldct.commands.denoise",  # denoise, models
    "ldct.commands.report",  # report
    "ldct.commands.train",  # train
    "ldct.commands.evaluate",  # evaluate
    "ldct.commands.simulate",  # simulate
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error types, abort types) of click and of the click copy that typer bundles."""
    import click

    usage: list[type] = [click.exceptions.ClickException]
    abort: list[type] = [click.exceptions.Abort]
    try:
        from typer._click import exceptions as tce  # typer >= 0.17 vendors click

        usage.append(tce.ClickException)
        if hasattr(tce, "Abort"):
            abort.append(tce.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(abort)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ldct`` console script."""
    try:
        rv = app(args=argv, standalone_mode=False)  # click returns typer.Exit codes here
        if isinstance(rv, int):
            return rv
    except LdctError as exc:
        print(f"ldct: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldct: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:  # raised by commands that finish early
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except Exception as exc:  # usage errors come here in non-standalone mode
        click_exc, abort = _click_exception_types()
        if isinstance(exc, click_exc):
            exc.show()
            return 2
        if isinstance(exc, abort):
            return 130
        raise
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
