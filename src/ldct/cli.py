"""The ``ldct`` command. Thin: each sub-command lives in ``ldct.commands.<name>`` and calls the library.

Exit codes and messages (every command, every input):

- a user mistake (bad file, bad option, bad recipe: :class:`ldct.errors.LdctError`, or a command-line usage
  error) prints one line ``ldct: error: ...`` on stderr and exits with code 2, without a traceback;
- an unexpected internal error prints one line naming the inputs and the place in ldct, says it is a bug
  to report, and exits with code 1 (the traceback only with ``ldct --debug ...``);
- Ctrl-C exits with 130.

Typer (which bundles its own copy of click since 0.17) is the only command-line dependency: nothing here
imports ``click`` itself.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

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
    "ldct.commands.serve",  # serve
]

# Command-line exceptions of the click that typer uses (its bundled copy, or click itself in older typer):
# found through typer's public BadParameter so that no click import is needed.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _version(value: bool) -> None:
    if value:
        from ldct import __version__

        typer.echo(f"ldct {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the ldct version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an internal error."),
) -> None:
    """Low-dose CT denoising: read CT in HU, simulate low dose, train, evaluate, denoise."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def _usage_line(exc: Exception) -> str:
    """One line for a command-line usage error: what was wrong, and where the help is."""
    message = " ".join(str(exc.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "ldct"
    return f"ldct: error: {command}: {message} (see '{command} --help')"


def _internal_error_line(exc: BaseException, argv: list[str]) -> str:
    """One line for a bug: the inputs named on the command line, the place in ldct, how to report it."""
    inputs = [a for a in argv if not a.startswith("-") and os.path.exists(a)]
    package = Path(__file__).resolve().parent
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if package in path.parents:
            where = f" at {path.relative_to(package.parent)}:{frame.lineno}"
            break
    named = f" while processing {', '.join(inputs)}" if inputs else ""
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return (
        f"ldct: error: internal error{named}{where}: {detail}. This is a bug in ldct: please report it "
        f"with the output of 'ldct --debug {' '.join(argv)}'"
    )


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ldct`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="ldct")  # click returns typer.Exit codes here
        if isinstance(rv, int):
            return rv
    except LdctError as exc:
        print(f"ldct: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("ldct: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:  # raised by commands that finish early
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except _CLICK_EXCEPTION as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `ldct`: the help, as asked
            typer.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
            return 0
        print(_usage_line(exc), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, exit 1
        if _out_of_memory(exc):
            print("ldct: error: out of memory: the input, batch or tile is larger than this machine can hold "
                  "(use a smaller --tile, train.batch_size or data.patch_size)", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        print(_internal_error_line(exc, argv), file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
