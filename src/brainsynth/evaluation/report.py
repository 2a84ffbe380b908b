"""report.html: metric tables, orthogonal-slice montages and distribution plots (matplotlib PNGs,
written to ``figures/`` and embedded in the page so that the HTML file stands alone)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from brainsynth.io import atomic_path, write_text_atomic

_VOLUME_PLOTS = ("gm", "wm", "csf", "ventricles", "brain", "mask")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def montage(
    volumes: list[np.ndarray], titles: list[str], path: Path, vmax: float | None = None
) -> Path:
    """One row per volume: sagittal, coronal, axial mid-slices (RAS arrays; superior/anterior up)."""
    try:
        from brainsynth.viz import montage as viz_montage

        return viz_montage(volumes, path, titles, vmax=vmax)
    except ImportError:  # pragma: no cover - viz is part of the package
        plt = _plt()
        fig, axes = plt.subplots(len(volumes), 3, figsize=(7.5, 2.6 * len(volumes)), squeeze=False)
        for i, vol in enumerate(volumes):
            cx, cy, cz = (s // 2 for s in vol.shape)
            hi = vmax or float(np.percentile(vol, 99.5)) or 1.0
            for j, sl in enumerate((vol[cx], vol[:, cy], vol[:, :, cz])):
                axes[i, j].imshow(sl.T, origin="lower", cmap="gray", vmin=0, vmax=hi)
                axes[i, j].axis("off")
            axes[i, 0].set_title(titles[i], fontsize=8, loc="left")
        fig.tight_layout()
        return _save(fig, path)


def volume_histograms(real: list[dict], synthetic: list[dict], estimator: str, path: Path) -> Path:
    plt = _plt()
    keys = [k for k in _VOLUME_PLOTS if real and k in real[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        r = np.asarray([d[k] for d in real]) / 1000.0
        s = np.asarray([d[k] for d in synthetic]) / 1000.0
        lo, hi = float(min(r.min(), s.min())), float(max(r.max(), s.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        ax.hist(r, bins=bins, alpha=0.55, label=f"real (n={len(r)})", color="tab:blue")
        ax.hist(s, bins=bins, alpha=0.55, label=f"synthetic (n={len(s)})", color="tab:orange")
        ax.set_title(f"{k} [ml]", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"volumes, estimator: {estimator}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def intensity_histogram(
    hr: np.ndarray, hs: np.ndarray, rng: tuple[float, float], path: Path
) -> Path:
    plt = _plt()
    edges = np.linspace(rng[0], rng[1], len(hr) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(5, 2.8))
    for h, name, c in ((hr, "real", "tab:blue"), (hs, "synthetic", "tab:orange")):
        ax.plot(centres, h / max(h.sum(), 1), label=name, color=c)
    ax.set_xlabel("intensity inside brain mask", fontsize=8)
    ax.set_ylabel("fraction of voxels", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def feature_pca(fr: np.ndarray, fs: np.ndarray, name: str, path: Path) -> Path:
    """Both sets projected on the first two principal axes of the pooled features."""
    plt = _plt()
    z = np.concatenate([fr, fs])
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    p = zc @ vt[:2].T
    fig, ax = plt.subplots(figsize=(4, 3.4))
    ax.scatter(p[: len(fr), 0], p[: len(fr), 1], s=10, alpha=0.7, label="real")
    ax.scatter(p[len(fr) :, 0], p[len(fr) :, 1], s=10, alpha=0.7, label="synthetic")
    ax.set_title(f"feature PCA ({name})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# --- HTML --------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"></p>'


def _sets_sections(m: dict, extras: dict, fig: Path) -> list[str]:
    parts = ["<h2>Summary</h2>" + _table(_summary_rows(m), ["metric", "value"])]
    for est, block in m.get("anatomy", {}).items():
        parts.append(_volume_section(est, block))
    pics = _sets_figures(m, extras, fig)
    parts.append("<h2>Figures</h2>" + "".join(_img(p) for p in pics))
    return parts


def _summary_rows(m: dict) -> list[list]:
    summary = [["n real / synthetic", f"{m['inputs']['n_real']} / {m['inputs']['n_synthetic']}"]]
    if "fid" in m:
        f, k = m["fid"], m["mmd"]
        summary += [
            ["feature extractor", f["features"]],
            ["FID", f["fid"]],
            ["FID caveat", f["caveat"]],
            ["MMD² (Gaussian RBF, unbiased)", k["mmd2_rbf_unbiased"]],
            ["MMD bandwidth (median heuristic)", k["bandwidth"]],
            [f"MMD permutation p ({k['n_permutations']} perms)", k["permutation_pvalue"]],
            ["MMD² (linear kernel, unbiased; means only)", k["mmd2_linear_unbiased"]],
        ]
    for name in ("synthetic", "real") if "diversity_ms_ssim" in m else ():
        e = m["diversity_ms_ssim"][name]
        if "skipped" in e:
            summary.append([f"MS-SSIM within {name}", e["skipped"]])
        else:
            summary.append(
                [
                    f"MS-SSIM within {name} ({e['n_pairs']} pairs)",
                    f"{_fmt(e['mean'])} ± {_fmt(e['std'])}",
                ]
            )
    summary.append(
        ["intensity W1 (pooled, in mask)", m["intensity"]["wasserstein1_pooled_histogram"]]
    )
    return summary


def _ml(v: float | None) -> float | None:
    return None if v is None else v / 1000


def _volume_section(est: str, block: dict) -> str:
    rows = [
        [
            key,
            _ml(c["mean_real"]),
            _ml(c["std_real"]),
            _ml(c["mean_synthetic"]),
            _ml(c["std_synthetic"]),
            c["ks_statistic"],
            c["ks_pvalue"],
            _ml(c["wasserstein1"]),
        ]
        for key, c in block["volumes"].items()
    ]
    header = [
        "volume",
        "real mean ml",
        "real sd",
        "synth mean ml",
        "synth sd",
        "KS",
        "KS p",
        "W1 ml",
    ]
    return (
        f"<h2>Volumes ({html.escape(est)})</h2><p class=note>{html.escape(block['description'])}</p>"
        + _table(rows, header)
    )


def _sets_figures(m: dict, extras: dict, fig: Path) -> list[Path]:
    r, s = extras["sets"]["real"], extras["sets"]["synthetic"]
    vmax = 1.0 if m["preprocessing"]["intensity"] != "raw" else None
    pics = []
    for name, st in (("real", r), ("synthetic", s)):
        if st.montage:
            titles = [f"{name} {i.id}" for i in st.items[: len(st.montage)]]
            pics.append(montage(st.montage, titles, fig / f"montage_{name}.png", vmax))
    if r.gmm and s.gmm:
        pics.append(volume_histograms(r.gmm, s.gmm, "gmm", fig / "volumes_gmm.png"))
    if r.labels and all(r.labels) and s.labels and all(s.labels):
        pics.append(volume_histograms(r.labels, s.labels, "labels", fig / "volumes_labels.png"))
    pics.append(intensity_histogram(r.hist, s.hist, extras["hist_range"], fig / "intensity.png"))
    if r.features and s.features:
        pics.append(
            feature_pca(
                np.stack(r.features),
                np.stack(s.features),
                extras["features_name"],
                fig / "features_pca.png",
            )
        )
    return pics


def _paired_sections(m: dict, extras: dict, fig: Path) -> list[str]:
    rows = [[k, v["mean"], v["std"], v["median"], v["n"]] for k, v in m["summary"].items() if k]
    parts = [
        f"<h2>Paired metrics ({m['inputs']['n_pairs']} pairs)</h2>"
        + _table(rows, ["metric", "mean", "sd", "median", "n"])
    ]
    parts.append(
        "<h2>Settings</h2><pre>" + html.escape(json.dumps(m["settings"], indent=1)) + "</pre>"
    )
    if extras["montage"]:
        vmax = 1.0 if m["preprocessing"]["intensity"] != "raw" else None
        p = montage(extras["montage"], extras["titles"], fig / "montage_pairs.png", vmax)
        parts.append("<h2>Examples</h2>" + _img(p))
    return parts


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;font-size:14px}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #bbb;padding:3px 8px;"
    "text-align:left}th{background:#eee}.note{color:#555;font-size:12px}img{max-width:100%}"
)


def write_report(metrics: dict, extras: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    fig = out / "figures"
    head = [
        f"<h1>brainsynth evaluation ({html.escape(metrics['mode'])})</h1>",
        "<p class=note>"
        + html.escape(
            f"brainsynth {metrics['brainsynth_version']}, {metrics['created']}; "
            f"real: {metrics['inputs']['real']}; synthetic: {metrics['inputs']['synthetic']}"
        )
        + "</p>",
        "<p class=note>command: <code>" + html.escape(str(metrics.get("command"))) + "</code></p>",
        "<h2>Preprocessing</h2>"
        + _table([[k, v] for k, v in metrics["preprocessing"].items()], ["step", "value"]),
    ]
    if metrics.get("warnings"):
        head.append(
            "<h2>Warnings</h2><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in metrics["warnings"])
            + "</ul>"
        )
    body = (
        _paired_sections(metrics, extras, fig)
        if metrics["mode"] == "paired"
        else _sets_sections(metrics, extras, fig)
    )
    tail = ["<p class=note>All numbers: metrics.json (same folder).</p>"]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>brainsynth evaluation</title>"
        f"<style>{_CSS}</style></head><body>{''.join(head + body + tail)}</body></html>"
    )
    path = out / "report.html"
    write_text_atomic(path, page)
    return path
