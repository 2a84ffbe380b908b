"""Pictures: orthogonal mid-slice montages of volumes (matplotlib, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainsynth.io import atomic_path


def montage(
    volumes: list[np.ndarray],
    path: str | Path,
    titles: list[str] | None = None,
    vmax: float | None = None,
) -> Path:
    """One row per volume: sagittal, coronal, axial mid-slices (RAS arrays, superior/anterior up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(volumes)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for i, vol in enumerate(volumes):
        cx, cy, cz = (s // 2 for s in vol.shape[:3])
        hi = vmax if vmax is not None else float(np.percentile(vol, 99.5)) or 1.0
        for j, sl in enumerate((vol[cx, :, :], vol[:, cy, :], vol[:, :, cz])):
            axes[i, j].imshow(sl.T, origin="lower", cmap="gray", vmin=0, vmax=hi)
            axes[i, j].axis("off")
        if titles:
            axes[i, 0].set_title(titles[i], fontsize=8, loc="left")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 80) -> Path:
    """``fig`` laid out tightly, written atomically as a PNG at ``path``, then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path
