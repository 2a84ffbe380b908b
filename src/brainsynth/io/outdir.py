"""One output-folder policy for every command, checked before any long work starts.

- ``--out`` must be a folder that exists or can be created, and that this process can write to;
  a path naming an existing file, or an unwritable place, is an :class:`InputError` naming it.
- A command that writes a *set* (samples, a report, a cohort) refuses a non-empty folder, so two
  runs never mix (a later ``evaluate`` would pick up the leftovers). With ``overwrite=True`` it
  first removes what that command owns there (the globs it names) and leaves anything else alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from brainsynth.errors import InputError


def check_output_dir(path: str | Path, *, create: bool = True) -> Path:
    """``path`` as a writable folder (created with its parents when ``create``); else InputError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is a file, not a folder: choose another --out")
    probe = path
    while not probe.exists():  # the nearest existing ancestor must let us create the rest
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(path, f"cannot create a folder here: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(path, f"not writable (no write permission on {probe})")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(path, f"cannot create the output folder ({e.strerror or e})") from e
    return path


def claim_output_dir(path: str | Path, owned: Sequence[str], *, overwrite: bool = False) -> Path:
    """A writable, empty folder for a set of outputs. With ``overwrite``, entries of ``path``
    matching the globs in ``owned`` are removed first; other entries still make it non-empty."""
    path = check_output_dir(path, create=False)
    if path.is_dir() and overwrite:
        for pattern in owned:
            for p in path.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
    if path.is_dir():
        left = sorted(p.name for p in path.iterdir())
        if left:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            hint = (
                "these are not this command's outputs: move them or choose another --out"
                if overwrite
                else "pass --overwrite to replace its contents, or choose another --out"
            )
            raise InputError(path, f"output folder is not empty ({shown}); {hint}")
    return check_output_dir(path)
