"""Usage mistakes on the command line: one line ``ldct: error: ...``, exit code 2, no traceback.

Every command is tried with its usual mistakes (missing argument, missing -o, a non-numeric number, an unknown
option), through a real subprocess of the installed package, so a missing dependency (as click once was) fails.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ldct import cli

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldct", *args], check=False, capture_output=True, text=True,
                          timeout=120)


def _assert_one_line_usage_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ldct: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


MISTAKES = [
    (["info"], ["ldct info", "Missing argument"]),
    (["denoise", "X"], ["ldct denoise", "--out"]),
    (["denoise", "X", "-o", "Y", "--tile", "abc"], ["--tile"]),
    (["--tile", "abc"], ["--tile"]),
    (["nosuch"], ["nosuch"]),
    (["simulate", "x.npy"], ["--out"]),
    (["simulate", "x.npy", "-o", "y", "--dose", "lots"], ["lots"]),
    (["convert", "a"], ["Missing argument"]),
    (["preview", "a"], ["--out"]),
    (["preview", "a", "-o", "b.png", "--slice", "k"], ["--slice"]),
    (["train"], ["Missing argument"]),
    (["train", "dncnn", "--steps", "many"], ["--steps"]),
    (["evaluate"], ["Missing argument"]),
    (["report"], ["Missing argument"]),
    (["sample", "--bogus"], ["--bogus"]),
    (["models", "extra"], ["extra"]),
    (["info", "a", "--json", "--nope"], ["--nope"]),
]


@pytest.mark.parametrize("args,words", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_usage_mistake_is_one_line_exit_2(args, words):
    _assert_one_line_usage_error(_run(*args), *words)


def test_missing_input_file_is_one_line_exit_2(tmp_path):
    _assert_one_line_usage_error(_run("info", str(tmp_path / "nope.npy")), "nope.npy")


def test_version_and_bare_help():
    r = _run("--version")
    assert r.returncode == 0 and re.fullmatch(r"ldct \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout
    assert r.stdout.split()[1] == importlib.metadata.version("ldct")
    r = _run()
    assert r.returncode == 0 and "Usage" in r.stdout and "denoise" in r.stdout


def test_internal_error_is_one_line_exit_1_and_traceback_only_with_debug(tmp_path, monkeypatch, capsys):
    """A bug (not a user mistake) names the input and the place in ldct; --debug adds the traceback."""
    scan = tmp_path / "scan.npy"
    import numpy as np

    np.save(scan, np.zeros((2, 8, 8), np.float32))

    def broken(*a, **k):  # fault injection: the summary code raising as a bug would
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("ldct.io.volume_summary", broken, raising=True)
    assert cli.main(["info", str(scan)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(scan) in err and "bug" in err and "ZeroDivisionError" in err and "ldct/commands/io_cmds.py" in err
    assert cli.main(["--debug", "info", str(scan)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ldct: error: internal error")


def _third_party_imports() -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported only inside functions) by ldct's source."""
    top: set[str] = set()
    lazy: set[str] = set()
    for p in (ROOT / "src" / "ldct").rglob("*.py"):
        tree = ast.parse(p.read_text())
        module_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            (top if id(node) in module_level else lazy).update(names)
    keep = {n for n in top | lazy if n not in sys.stdlib_module_names and n != "ldct"}
    return top & keep, (lazy - top) & keep


def test_every_imported_module_is_a_declared_dependency():
    """What ldct imports must come from a distribution ldct declares (click once did not); a module of an
    optional extra (e.g. ``monai``) may only be imported lazily, inside the function that needs it."""
    def names(reqs):
        return {re.split(r"[<>=!~\[; ]", r)[0].lower().replace("_", "-") for r in reqs}

    reqs = importlib.metadata.requires("ldct") or []
    core = names(r for r in reqs if "extra ==" not in r)
    extras = names(r for r in reqs if "extra ==" in r and "extra == \"dev\"" not in r)
    providers = importlib.metadata.packages_distributions()
    top, lazy = _third_party_imports()
    missing = {}
    for mod in sorted(top | lazy):
        dists = {d.lower().replace("_", "-") for d in providers.get(mod, [])}
        if not dists & (core if mod in top else core | extras):
            missing[mod] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject dependencies: {missing}"
    assert "monai" in lazy and "monai" not in top  # ldct.transforms works without MONAI


def test_torch_requirement_is_a_range():
    """A user with their own PyTorch (MONAI, CUDA) must not be forced onto another build."""
    torch_req = [r for r in importlib.metadata.requires("ldct") or [] if re.match(r"torch\b", r)]
    assert torch_req and "==" not in torch_req[0] and ">=" in torch_req[0], torch_req
