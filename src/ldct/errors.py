"""User-facing errors.

Anything a user can cause (bad file, bad option, bad recipe) raises :class:`LdctError` with a message
that names the file and the problem. The CLI prints it as one line on stderr and exits with code 2,
without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class LdctError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.message = message  # the problem without the path (callers that add context reuse it)
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
