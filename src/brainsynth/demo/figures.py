"""The demo's one picture that ``brainsynth.viz.montage`` (grey levels only) cannot draw: images
beside their label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainsynth.viz import save_figure


def label_montage(
    images: list[np.ndarray], labels: list[np.ndarray], path: Path, titles: list[str]
) -> Path:
    """One row per volume: its sagittal, coronal and axial mid-slices (RAS arrays, as
    ``viz.montage``), then the same slices of its label map in colour over the image. Labels
    are coloured by their rank among all labels shown, so that a label has one colour in every
    row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.unique(np.concatenate([np.unique(lab) for lab in labels]))
    top = max(len(values) - 1, 1)
    fig, axes = plt.subplots(len(images), 6, figsize=(13, 2.2 * len(images)), squeeze=False)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        c = [s // 2 for s in img.shape[:3]]
        cuts = [(slice(c[0], c[0] + 1), slice(None), slice(None)),
                (slice(None), slice(c[1], c[1] + 1), slice(None)),
                (slice(None), slice(None), slice(c[2], c[2] + 1))]  # fmt: skip
        for j, cut in enumerate(cuts):
            im = np.squeeze(img[cut], axis=j).T
            sl = np.squeeze(lab[cut], axis=j).T
            rank = np.ma.masked_where(sl == 0, np.searchsorted(values, sl))
            for k, ax in enumerate((axes[i, j], axes[i, j + 3])):
                ax.imshow(im, origin="lower", cmap="gray", vmin=0, vmax=1)
                if k:
                    ax.imshow(rank, origin="lower", cmap="tab20", vmin=0, vmax=top, alpha=0.55,
                              interpolation="nearest")  # fmt: skip
                ax.axis("off")
        axes[i, 0].set_title(titles[i], fontsize=8, loc="left")
        axes[i, 3].set_title("labels", fontsize=8, loc="left")
    return save_figure(fig, path)
