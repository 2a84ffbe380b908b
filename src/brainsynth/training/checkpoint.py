"""Checkpoints: a folder per step, written whole or not at all, verified when loaded.

    RUN/checkpoints/step_0000500/model.safetensors   raw weights
    RUN/checkpoints/step_0000500/ema.safetensors     EMA weights (what sampling uses)
    RUN/checkpoints/step_0000500/state.pt            optimiser, scheduler, RNG states, data position
    RUN/checkpoints/step_0000500/meta.json           step, resolved config, versions, file list
    RUN/checkpoints/latest                           name of the newest complete folder

Writing: the folder is written under a hidden random name (created with mode 0777, files 0666, so
the umask decides as for every other output), flushed to disk, then renamed; ``latest`` is replaced
atomically after the rename, so a crash at any point leaves the previous checkpoint intact and
loadable. Folders are deleted (pruning, re-saving a step) by first renaming them to a hidden
``.trash.*`` name, so a kill during the deletion never leaves a visible half folder; hidden
leftovers are swept at the next save. ``state.pt`` holds only tensors and plain Python values, so
it loads with ``torch.load(weights_only=True)``.

An exported model (``brainsynth export``, ``brainsynth/export.py``) is a run folder whose step folder
holds ``ema.safetensors`` (float16) and ``meta.json`` only; the paths in its config are relative to
its run folder (:func:`path_in_run`), so that it can be moved.

Verification: ``meta.json`` lists every file with its size and sha256. A step folder is *complete*
when ``meta.json`` parses and every listed file is there with its size (cheap: ``list_checkpoints``,
``has_checkpoint``, ``resolve_checkpoint``); loading (``load_checkpoint``) also compares the
checksums of the files it reads, once per load. Checkpoints of older versions list sizes only and
are checked by size. Given a run folder (or its ``checkpoints/``), readers take ``latest``'s folder
and fall back to the newest intact ``step_*`` folder, with a warning naming the damaged one, when it
is damaged or missing; an explicitly named step folder that is damaged, or a run without any intact
checkpoint, is an ``InputError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file

from brainsynth import __version__
from brainsynth.errors import InputError
from brainsynth.io import write_text_atomic

FORMAT = 1
_STEP_RE = re.compile(r"^step_(\d+)$")
_HIDDEN_LEFTOVERS = (".step_*", ".trash.*", ".old.*")  # temp, being deleted, re-save (older code)
_T = TypeVar("_T")


def _cpu_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # own storage per tensor: safetensors refuses shared or strided views (tied weights)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _root(path: Path) -> Path:
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _step_of(path: Path) -> int | None:
    m = _STEP_RE.match(path.name)
    return int(m.group(1)) if m else None


def _step_dirs(root: Path) -> list[Path]:
    """Visible ``step_*`` folders of ``root``, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if (s := _step_of(p)) is not None and p.is_dir()]
    return [p for _, p in sorted(found)]


def _is_step_dir(path: Path) -> bool:
    """A step folder (named by the user) rather than a run or its checkpoints/ folder; a step_*
    folder without its meta.json still counts, so that it is reported as damaged."""
    if (path / "meta.json").exists():
        return True
    run_like = (path / "checkpoints").exists() or (path / "latest").exists()
    return _step_of(path) is not None and path.is_dir() and not run_like


# -- verification ---------------------------------------------------------------------------------
def _what(name: str) -> str:
    if name.endswith(".safetensors"):
        return "weights file"
    return "training state" if name == "state.pt" else "checkpoint file"


def _read_meta_file(d: Path) -> dict:
    f = d / "meta.json"
    try:
        meta = json.loads(f.read_text())
    except FileNotFoundError as e:
        raise InputError(f, "missing: the checkpoint folder is incomplete") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f, f"truncated or damaged checkpoint metadata ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("files", {}), dict):
        raise InputError(f, "damaged checkpoint metadata (not the expected JSON object)")
    return meta


def _listed(entry: object) -> tuple[int | None, str | None]:
    """(size, sha256) of a ``meta["files"]`` entry: ``{"size", "sha256"}``, or a bare size (older)."""
    if isinstance(entry, dict):
        return entry.get("size"), entry.get("sha256")
    return (entry, None) if isinstance(entry, int) else (None, None)


def _verify(d: Path, checksums: Iterable[str] = ()) -> dict:
    """``meta.json`` of step folder ``d`` once every listed file is there with its size and, for the
    names in ``checksums``, its sha256; otherwise an InputError naming the file."""
    meta = _read_meta_file(d)
    to_hash = set(checksums)
    for name, entry in meta.get("files", {}).items():
        f = d / name
        size, digest = _listed(entry)
        try:
            actual = f.stat().st_size
        except OSError as e:
            raise InputError(f, f"missing from the checkpoint folder ({e.strerror})") from e
        if size is not None and actual != size:
            raise InputError(
                f, f"truncated or damaged {_what(name)} ({actual} bytes, expected {size})"
            )
        if name in to_hash and digest is not None and _sha256(f) != digest:
            raise InputError(f, f"damaged {_what(name)} (sha256 checksum mismatch)")
    return meta


def _complete(d: Path) -> bool:
    try:
        _verify(d)
    except InputError:
        return False
    return True


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step folders of a run (or of its ``checkpoints/`` folder), oldest first."""
    return [p for p in _step_dirs(_root(Path(run_dir))) if _complete(p)]


# -- choosing the folder --------------------------------------------------------------------------
def _candidates(path: Path) -> tuple[list[Path], bool]:
    """(step folders to try, best first; whether the user named the folder)."""
    if _is_step_dir(path):
        return [path], True
    if not path.exists():
        raise InputError(path, "not found")
    root = _root(path)
    newest_first = _step_dirs(root)[::-1]
    try:
        name = (root / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    latest = [p for p in newest_first if p.name == name]  # empty if it names no visible folder
    found = latest + [p for p in newest_first if p not in latest]
    if not found:
        raise InputError(
            path, "no checkpoint here (expected a run folder, checkpoints/ or a step_* folder)"
        )
    return found, False


def _first_intact(path: str | Path, use: Callable[[Path], _T], warn: bool = True) -> _T:
    """``use(folder)`` for the first candidate folder of ``path`` it accepts (it raises InputError
    on a damaged one). Damaged folders passed over are reported by one warning if ``warn``."""
    found, named = _candidates(Path(path))
    if named:
        return use(found[0])
    damaged: list[InputError] = []
    for d in found:
        try:
            result = use(d)
        except InputError as e:
            damaged.append(e)
            continue
        if damaged and warn:
            warnings.warn(
                f"damaged checkpoint skipped: {'; '.join(map(str, damaged))}; falling back to {d}",
                UserWarning,
                stacklevel=3,
            )
        return result
    raise InputError(_root(Path(path)), f"no intact checkpoint: {'; '.join(map(str, damaged))}")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, its ``checkpoints/`` folder, or a step folder -> the complete step folder to
    use (sizes checked; checksums are left to ``load_checkpoint``, which also warns about damaged
    folders passed over: callers that resolve and then load hear of them once)."""

    def use(d: Path) -> Path:
        _verify(d)
        return d

    return _first_intact(path, use, warn=False)


def has_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    if _is_step_dir(p):
        return _complete(p)
    return bool(list_checkpoints(p))


def refuse_existing_run(out: str | Path) -> None:
    """InputError if ``out`` already holds checkpoints: a new run must not overwrite them (the
    trainer checks before step 0; the CLI earlier, before any data is read)."""
    if has_checkpoint(out):
        raise InputError(
            out, "already holds checkpoints: resume it (--resume) or choose another --out"
        )


def find_in_run(path: str | Path, relative: str | Path, levels: int = 3) -> Path | None:
    """``relative`` (a run's file such as ``template/template_T1w.nii.gz``) looked up from a run
    folder, one of its checkpoints or a stage folder, up to ``levels`` parents up; None if absent."""
    p = Path(path)
    for folder in [p, *list(p.parents)[:levels]]:
        if (folder / relative).is_file():
            return folder / relative
    return None


def path_in_run(step_dir: str | Path, value: str | Path) -> Path:
    """A path stored in a checkpoint's config (another run, a file of the run): absolute as
    written, or relative to the run folder of ``step_dir`` (``RUN/checkpoints/step_*``), as an
    exported model writes them so that it can be moved."""
    return Path(step_dir).parent.parent / value


def read_meta(path: str | Path) -> dict:
    return _read_meta_file(resolve_checkpoint(path))


# -- loading --------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _load_weights(f: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    if not f.exists():
        raise InputError(
            f, f"missing from checkpoint (has {sorted(x.name for x in f.parent.iterdir())})"
        )
    try:
        return load_file(str(f), device=str(map_location))
    except Exception as e:  # SafetensorError, OSError, ...: all mean the file is unusable
        raise InputError(f, f"truncated or damaged weights file ({_first_line(e)})") from e


def _load_state(f: Path, map_location: str | torch.device) -> dict:
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # RuntimeError (zip), EOFError, UnpicklingError, OSError, ...
        raise InputError(f, f"truncated or damaged training state ({_first_line(e)})") from e


def load_checkpoint(
    path: str | Path,
    names: tuple[str, ...] = ("model", "ema"),
    with_state: bool = True,
    map_location: str | torch.device = "cpu",
    method: str | None = None,
) -> dict:
    """``{"meta": dict, "dir": Path, "<name>": state_dict, ..., "state": dict | None}`` of the
    first intact folder (see the module docstring), the files read checked against their sha256.
    ``method``: the checkpoint must have been written by that method (else an InputError)."""
    reads = [f"{n}.safetensors" for n in names] + (["state.pt"] if with_state else [])

    def use(d: Path) -> dict:
        meta = _verify(d, checksums=reads)
        if method is not None:
            check_method(meta, method, d)
        out: dict = {"meta": meta, "dir": d}
        for n in names:
            out[n] = _load_weights(d / f"{n}.safetensors", map_location)
        out["state"] = _load_state(d / "state.pt", map_location) if with_state else None
        return out

    return _first_intact(path, use)


def checkpoint_method(meta: dict) -> str | None:
    """The method that wrote a checkpoint: ``meta["method"]``, or its config's ``method`` key."""
    config = meta.get("config")
    return meta.get("method") or (config.get("method") if isinstance(config, dict) else None)


def check_method(meta: dict, method: str, where: str | Path) -> None:
    """InputError unless the checkpoint was written by ``method`` (a checkpoint without a method
    name, from an older version, passes)."""
    found = checkpoint_method(meta)
    if found is not None and found != method:
        raise InputError(where, f"checkpoint of method {found!r}, not {method!r}")


def load_model_for_inference(
    path: str | Path, method: str | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """(resolved config dict, EMA weights) of a run's latest checkpoint (or of a step folder);
    ``method`` as in :func:`load_checkpoint`."""
    ck = load_checkpoint(path, names=("ema",), with_state=False, method=method)
    return ck["meta"]["config"], ck["ema"]


# -- writing --------------------------------------------------------------------------------------
def make_hidden_dir(root: Path, name: str) -> Path:
    """A new hidden folder ``.<name>.<random>`` in ``root``; mode 0777 so the umask decides
    (``tempfile.mkdtemp`` would make it 0700 and the rename would keep that)."""
    for _ in range(100):
        tmp = root / f".{name}.{secrets.token_hex(6)}"
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary folder in {root}")  # pragma: no cover


def _trash(d: Path) -> Path:
    """A hidden name beside ``d`` to move it to before deleting it (swept by the next save)."""
    return d.parent / f".trash.{d.name}.{os.getpid()}.{secrets.token_hex(3)}"


def _remove(d: Path) -> None:
    """Delete folder ``d``, renaming it out of view first: ``rmtree`` goes file by file, and a kill
    midway must not leave a visible step folder with its meta.json but without weights."""
    trash = _trash(d)
    try:
        d.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def file_entry(path: Path) -> dict:
    """The ``meta["files"]`` entry of a written file: its size and sha256."""
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``; an existing ``final`` is first renamed out
    of view (``.trash.*``) and deleted after, so ``final`` is never seen half replaced."""
    old = _trash(final)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    _fsync(final.parent)


def _write_files(tmp: Path, step: int, weights: dict, state: dict | None) -> dict[str, dict]:
    """Weights and state (if any) into ``tmp``; their ``meta["files"]`` entries."""
    # safetensors creates its files 0600 whatever the umask; give them what open() would give:
    # 0666 & ~umask, i.e. the mode of the folder (made with 0777 & ~umask) without the x bits
    file_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o666
    paths = []
    for key, sd in weights.items():
        path = tmp / f"{key}.safetensors"
        save_file(_cpu_copies(sd), str(path), metadata={"step": str(step), "format": "pt"})
        os.chmod(path, file_mode)
        paths.append(path)
    if state is not None:
        torch.save(state, tmp / "state.pt")
        paths.append(tmp / "state.pt")
    return {p.name: file_entry(p) for p in paths}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict | None,
    config: dict,
    keep: int = 2,
    extra_meta: dict | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step_<step>/`` atomically and point ``latest`` at it.

    ``weights``: {"model": state_dict, "ema": state_dict, ...}, one safetensors file each;
    ``state``: what resuming needs (``torch.save``; None: no ``state.pt``, a folder for inference
    only); ``config``: the resolved config (JSON-able).
    Keeps the newest ``keep`` step folders.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    final = root / name
    tmp = make_hidden_dir(root, name)
    try:
        meta = {
            "format": FORMAT,
            "step": step,
            "config": config,
            "brainsynth_version": __version__,
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": _write_files(tmp, step, weights, state),
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        replace_dir(tmp, final)  # re-saving a step: e.g. a resumed run that was already finished
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / "latest", name + "\n")
    _prune(root, keep, final, step)
    return final


def _prune(root: Path, keep: int, current: Path, step: int) -> None:
    """Keep the newest ``keep`` complete folders (and ``current``); delete the other folders of
    earlier steps, damaged ones included, and hidden leftovers of crashes and deletions."""
    kept = set(list_checkpoints(root)[-max(keep, 1) :]) | {current}
    for d in _step_dirs(root):
        if d not in kept and (_step_of(d) or 0) < step:  # later folders: not ours to judge
            _remove(d)
    for pattern in _HIDDEN_LEFTOVERS:
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
