"""Run ``brainsynth ARGS`` in-process as the console script does, for the bad-input tables.

The tables in this folder hold rows ``(id, prepare the input, argv, expected exit code, words the
message must contain)``; :func:`run_cli` gives the exit code and everything printed. An exception
that escapes ``main()`` is a traceback a user would see: it comes back as exit code ``-1`` with the
exception in the text, so a row expecting a clean error fails and shows it.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback


def run_cli(*argv: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of ``brainsynth *argv``; -1 when an exception escaped."""
    from brainsynth.cli.main import main

    buf = io.StringIO()
    old_argv = sys.argv
    sys.argv = ["brainsynth", *map(str, argv)]
    code = 0
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # noqa: BLE001 - a traceback is what the tables guard against
        code = -1
        buf.write(traceback.format_exc())
    finally:
        sys.argv = old_argv
    return code, buf.getvalue()


def assert_clean_error(code: int, text: str, expected_code: int, words: tuple[str, ...]) -> None:
    """The command exited with ``expected_code``, printed no traceback, and named every word."""
    assert code == expected_code, f"exit {code}, expected {expected_code}:\n{text}"
    assert "Traceback" not in text, text
    low = text.lower()
    missing = [w for w in words if w.lower() not in low]
    assert not missing, f"message lacks {missing}:\n{text}"
