"""``OUT/report.html``: one page, a section per method: what its model is (the shipped model's
``model.json`` facts and the first lines of its card, or that a phantom model stood in), its
figures and its pictures. Plain HTML with the PNGs embedded (base64), each also linked by its path
relative to the report, so the page stands alone and still leads to the files beside it."""

from __future__ import annotations

import base64
import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

from brainsynth import __version__
from brainsynth.demo.sources import Source
from brainsynth.demo.steps import Shown
from brainsynth.io import write_text_atomic

_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;font-size:14px}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #bbb;padding:3px 8px;"
    "text-align:left}th{background:#eee}.note{color:#555;font-size:12px}img{max-width:100%}"
    ".fallback{background:#fff3cd;border:1px solid #e0c36a;padding:6px}"
    ".shipped{background:#e8f4ea;border:1px solid #9cc9a4;padding:6px}pre{background:#f6f6f6;"
    "padding:6px;white-space:pre-wrap}"
)


@dataclass
class Section:
    """One section of the page: a title, the model behind it (None: not a method's own) and what
    it shows."""

    title: str
    source: Source | None
    shown: Shown


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>" for a, b in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(caption: str, png: Path, root: Path) -> str:
    rel = Path(os.path.relpath(png, root)).as_posix()
    data = base64.b64encode(png.read_bytes()).decode()
    return (
        f'<figure><a href="{html.escape(rel)}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{data}"></a><figcaption class=note>{html.escape(caption)} '
        f"({html.escape(rel)})</figcaption></figure>"
    )


def _model(source: Source) -> str:
    """What the model is: the shipped model's facts and card, or the fallback's notice."""
    if not source.shipped:
        return f"<p class=fallback>Phantom fallback: {html.escape(source.summary())}.</p>"
    info = source.info
    rows = [("name", source.name), ("folder", str(source.path))]
    for key in ("method", "step", "parameters", "grid", "dtype", "exported", "brainsynth_version"):
        if key in info:
            rows.append((key, str(info[key])))
    if isinstance(info.get("total_bytes"), (int, float)):
        rows.append(("size", f"{info['total_bytes'] / 1e6:.1f} MB"))
    card = (
        "<pre>" + html.escape("\n".join(source.card)) + "</pre>"
        if source.card
        else "<p class=note>no model card (README.md) in the model folder</p>"
    )
    return (
        f"<p class=shipped>Shipped model {html.escape(source.name)}.</p>"
        + _table(rows, ("model.json", "value"))
        + card
    )


def _section(s: Section, root: Path) -> str:
    parts = [f"<h2>{html.escape(s.title)}</h2>"]
    if s.source is not None:
        parts.append(_model(s.source))
    if s.shown.figures:
        parts.append(_table(s.shown.figures, ("figure", "value")))
    parts += [f"<p class=note>{html.escape(n)}</p>" for n in s.shown.notes]
    parts += [_image(caption, png, root) for caption, png in s.shown.images]
    return "".join(parts)


def write_report(out: Path, sections: list[Section], command: str = "") -> Path:
    """Write ``out/report.html`` (atomically) and return its path."""
    out = Path(out)
    head = [
        "<h1>brainsynth demo</h1>",
        f"<p class=note>brainsynth {html.escape(__version__)}, "
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S %z'))}"
        + (f"; command: <code>{html.escape(command)}</code>" if command else "")
        + "</p>",
    ]
    fallbacks = [s.source for s in sections if s.source is not None and not s.source.shipped]
    if fallbacks:
        names = ", ".join(f.name for f in fallbacks)
        head.append(
            f"<p class=fallback>Not shipped, replaced by phantom models trained by this demo: "
            f"{html.escape(names)}. Their pictures and figures show the pipeline, not the "
            "quality of the method.</p>"
        )
    body = "".join(_section(s, out) for s in sections)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>brainsynth demo</title>"
        f"<style>{_CSS}</style></head><body>{''.join(head)}{body}</body></html>"
    )
    path = out / "report.html"
    write_text_atomic(path, page)
    return path
