"""Engine benchmark: seconds per training step / sampling step and peak memory of the UNet presets.

    .venv/bin/python benchmarks/engine.py                       # tiny,small,base at 32^3, 64^3
    .venv/bin/python benchmarks/engine.py --sizes 32 --batch 1,2 --device cpu
    brainsynth bench --help                                     # the same, as a CLI command

Prints a Markdown table. CPU figures run each configuration in a fresh process (its peak RSS);
CUDA figures use bf16 autocast, as the trainer does. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict

import torch

from brainsynth.cli.bench import run_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", default="tiny,small,base")
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--spatial-dims", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument(
        "--budget", type=float, default=120.0, help="s of timed training steps per config"
    )
    ap.add_argument("--out", help="write the results as JSON")
    a = ap.parse_args()
    devices = ["cpu", "cuda"] if a.device == "auto" else [a.device]
    if not torch.cuda.is_available():
        devices = [d for d in devices if d != "cuda"]
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    )
    results = run_benchmark(
        a.presets.split(","),
        [int(s) for s in a.sizes.split(",")],
        [int(b) for b in a.batch.split(",")],
        devices,
        spatial_dims=a.spatial_dims,
        steps=a.steps,
        budget_s=a.budget,
    )
    if a.out:
        with open(a.out, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=1)


if __name__ == "__main__":
    main()
