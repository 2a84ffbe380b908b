"""Errors that name the file and the problem, so users can fix their input."""

from __future__ import annotations

from pathlib import Path


class BrainsynthError(Exception):
    """Base class for errors the CLI reports as one line and a non-zero exit code."""


class InputError(BrainsynthError):
    """A user-supplied file or value is unusable. The message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def at(self, path: str | Path) -> InputError:
        """This error naming ``path`` when it names no file yet (a check deep in the library
        that saw only arrays), else itself."""
        return InputError(path, self.problem) if self.path is None else self
