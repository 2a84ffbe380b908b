"""Run logs: one JSON object per line in ``RUN/log.jsonl``, mirrored to TensorBoard when installed.

Only the main rank logs. On resume the records after the resumed step are dropped first (they
belong to the part of the interrupted run that is about to be redone), so the log of a resumed run
reads like the log of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, TextIO

from brainsynth.io import write_text_atomic


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the information as text
    return v


class RunLogger:
    """``log(step, {"loss": ..., ...})`` appends ``{"step": step, ...}`` to ``log.jsonl``."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(out_dir) / "log.jsonl"
        self.enabled = enabled
        self._fh: TextIO | None = None
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            self._tb = _tensorboard_writer(Path(out_dir) / "tensorboard")

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (atomically rewrites the file)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (json.JSONDecodeError, ValueError, TypeError, AttributeError):
                continue  # a half-written last line from a crash
        write_text_atomic(self.path, "".join(x + "\n" for x in keep))

    def log(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), **{k: _jsonable(v) for k, v in record.items()}}
        if self._fh is None:
            self._fh = open(self.path, "a")  # noqa: SIM115 - kept open for the run
        fh = self._fh
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _tensorboard_writer(folder: Path):
    try:
        import tensorboard  # noqa: F401 - SummaryWriter imports it lazily and fails late without it
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(str(folder))
    except Exception as e:  # noqa: BLE001 - logging must never stop training
        warnings.warn(f"TensorBoard disabled: {e}", stacklevel=2)
        return None
