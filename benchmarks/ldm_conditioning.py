"""Does ldm conditioning work? Measure the ventricle (and brain) volume of volumes generated at
requested covariates with the evaluation suite's label-free GMM estimate, and print the
correlation between requested and measured values.

    python benchmarks/ldm_conditioning.py SAMPLE_DIR [SAMPLE_DIR ...]

Each SAMPLE_DIR is the output of ``brainsynth sample ldm`` (NIfTI files + samples.tsv with the
covariates each volume was generated with).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from brainsynth.evaluation.anatomy import tissue_volumes_gmm
from brainsynth.io import read_volume


def measure(folder: Path) -> list[tuple[float, float, float, float]]:
    rows = list(csv.DictReader(open(folder / "samples.tsv"), delimiter="\t"))
    out = []
    for r in rows:
        vol = read_volume(folder / r["file"])
        v = tissue_volumes_gmm(vol.data, float(np.prod(vol.spacing)), spacing=tuple(vol.spacing))
        x, y, z = (n // 2 for n in vol.shape)
        centre = float(
            vol.data[x - 4 : x + 4, y - 6 : y + 6, z - 2 : z + 8].mean()
        )  # ventricle region
        out.append(
            (
                float(r["ventricle_volume"]),
                v["ventricles"],
                float(r["brain_volume"]),
                v["brain"],
                centre,
            )
        )
    return out


def main(folders: list[str]) -> None:
    allrows = []
    for f in folders:
        m = measure(Path(f))
        allrows += m
        req = np.array([r[0] for r in m])
        got = np.array([r[1] for r in m])
        cen = np.array([r[4] for r in m])
        print(
            f"{f}: n={len(m)} requested ventricles {req.mean():.0f} mm3 -> measured {got.mean():.0f} +- {got.std():.0f} mm3; central intensity {cen.mean():.3f} +- {cen.std():.3f}"
        )
    a = np.array(allrows)
    if np.ptp(a[:, 1]) == 0:
        print(
            "ventricles: the GMM proxy finds no deep CSF in these volumes (too smooth); see central intensity"
        )
    else:
        print(
            f"ventricles: Pearson r={pearsonr(a[:, 0], a[:, 1]).statistic:.3f} Spearman={spearmanr(a[:, 0], a[:, 1]).statistic:.3f} (n={len(a)})"
        )
    print(
        f"central intensity vs requested ventricles: Spearman={spearmanr(a[:, 0], a[:, 4]).statistic:.3f}"
    )
    print(f"brain:      Pearson r={pearsonr(a[:, 2], a[:, 3]).statistic:.3f} (n={len(a)})")
    print(
        "measured with: evaluation.anatomy.tissue_volumes_gmm (label-free; ventricles are a proxy)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
