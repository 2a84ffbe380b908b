"""``brainsynth bench``: seconds per training step and per sampling step, and peak memory, of the
denoising UNet presets at given sizes and batch sizes, on CPU and (when present) CUDA.

A training step is what the trainer does (bf16 autocast on CUDA, fp32 on CPU; forward, backward,
gradient clipping, AdamW; the trainer's default memory layout, ``nn.layout``); a sampling step is
one DDIM step (one forward pass, no gradients). Peak memory: ``torch.cuda.max_memory_allocated``
on CUDA; on CPU the peak resident set size of a fresh child process per configuration
(``ru_maxrss``: it includes torch itself, ~0.3-0.5 GiB).
Figures are printed, never asserted (``benchmarks/engine.py`` is the script form).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import typer

from brainsynth.cli.options import COUNT, POSITIVE, number


@dataclass
class BenchResult:
    device: str
    preset: str
    size: int
    batch: int
    spatial_dims: int
    amp: str
    params_m: float
    train_s: float | None
    sample_s: float | None
    peak_mib: float | None
    note: str = ""


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench_steps(
    preset: str, size: int, batch: int, dev, spatial_dims: int, grad_checkpointing: bool, bf16: bool
):
    """(model, train_step(), sample_steps(k)) of one configuration, seeded with 0."""
    import torch

    from brainsynth.diffusion.gaussian import GaussianProcess
    from brainsynth.nn.layout import set_memory_format
    from brainsynth.nn.unet import build_unet
    from brainsynth.sampling import ddim_sample
    from brainsynth.training.losses import diffusion_loss

    torch.manual_seed(0)
    model = build_unet(preset, spatial_dims, 1, 1, grad_checkpointing=grad_checkpointing).to(dev)
    set_memory_format(model, dev)  # the trainer's default layout (channels-last 3D on the CPU)
    process = GaussianProcess(1000)
    loss_fn = diffusion_loss(process)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn((batch, 1, *[size] * spatial_dims), generator=g).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, {"image": x0}, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()

    def sample_steps(k: int) -> None:
        model.eval()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            ddim_sample(model, process, torch.randn_like(x0), steps=k)
        model.train()

    return model, train_step, sample_steps


def _time_steps(
    train_step: Callable[[], None],
    sample_steps: Callable[[int], None],
    dev,
    steps: int,
    budget_s: float,
) -> tuple[list[float], float]:
    """(seconds of each timed training step, seconds per sampling step), after warm-ups."""
    train_step()  # warm-up: allocator, oneDNN primitives, lazy imports (can take minutes on CPU)
    _sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
        if sum(times) > budget_s:
            break
    sample_steps(1)  # warm-up
    _sync(dev)
    k = steps if len(times) == steps else 1
    t0 = time.perf_counter()
    sample_steps(k)
    _sync(dev)
    return times, (time.perf_counter() - t0) / k


def measure(
    preset: str,
    size: int,
    batch: int,
    device: str = "cpu",
    *,
    spatial_dims: int = 3,
    steps: int = 3,
    budget_s: float = 120.0,
    grad_checkpointing: bool = False,
) -> BenchResult:
    """Time ``steps`` training and sampling steps after one warm-up step of each; timing stops
    early once the timed training steps exceed ``budget_s`` (then one sampling step is timed)."""
    import torch

    from brainsynth.nn.presets import count_parameters
    from brainsynth.training.distributed import pick_device

    dev = pick_device(device)
    bf16 = dev.type == "cuda"
    model, train_step, sample_steps = _bench_steps(
        preset, size, batch, dev, spatial_dims, grad_checkpointing, bf16
    )
    times, sample_s = _time_steps(train_step, sample_steps, dev, steps, budget_s)
    train_s = sum(times) / len(times)
    note = "" if len(times) == steps else f"{len(times)} timed step(s): over budget"
    peak = None
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    return BenchResult(
        str(dev.type),
        preset,
        size,
        batch,
        spatial_dims,
        "bf16" if bf16 else "fp32",
        count_parameters(model) / 1e6,
        train_s,
        sample_s,
        peak,
        note,
    )


def _child() -> None:
    """Entry of the per-configuration CPU child process: argv[1] is a JSON of measure()'s args."""
    import resource

    import torch

    kw = json.loads(sys.argv[1])
    torch.set_num_threads(kw.pop("threads"))
    r = measure(**kw)
    r.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("RESULT " + json.dumps(asdict(r)))


def measure_cpu_isolated(preset: str, size: int, batch: int, **kw) -> BenchResult:
    """``measure`` on CPU in a fresh process, so its peak RSS belongs to this configuration."""
    import torch

    args = {"preset": preset, "size": size, "batch": batch, "device": "cpu", **kw}
    args["threads"] = torch.get_num_threads()
    code = "from brainsynth.cli.bench import _child; _child()"
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return BenchResult(**json.loads(line[7:]))
    err = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return BenchResult("cpu", preset, size, batch, kw.get("spatial_dims", 3), "fp32", 0, None, None, None, f"failed: {err}")  # fmt: skip


def run_benchmark(
    presets: list[str],
    sizes: list[int],
    batches: list[int],
    devices: list[str],
    *,
    spatial_dims: int = 3,
    steps: int = 3,
    budget_s: float = 120.0,
    echo=print,
) -> list[BenchResult]:
    results = []
    echo(header())
    for dev in devices:
        for preset in presets:
            for size in sizes:
                for batch in batches:
                    kw = dict(spatial_dims=spatial_dims, steps=steps, budget_s=budget_s)
                    if dev == "cpu":
                        r = measure_cpu_isolated(preset, size, batch, **kw)
                    else:
                        try:
                            r = measure(preset, size, batch, dev, **kw)  # type: ignore[arg-type]
                        except RuntimeError as e:  # out of memory and the like
                            r = BenchResult(dev, preset, size, batch, spatial_dims, "bf16", 0, None, None, None, f"failed: {str(e).splitlines()[0][:60]}")  # fmt: skip
                            _free_cuda()
                        _free_cuda()
                    results.append(r)
                    echo(row(r))
    return results


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def header() -> str:
    cols = "device preset params_M grid batch amp train_s/step sample_s/step peak_MiB note"
    return "| " + " | ".join(cols.split()) + " |\n|" + "---|" * len(cols.split())


def row(r: BenchResult) -> str:
    grid = "x".join([str(r.size)] * r.spatial_dims)
    cells = [
        r.device,
        r.preset,
        f"{r.params_m:.2f}",
        grid,
        str(r.batch),
        r.amp,
        _fmt(r.train_s, ".3f"),
        _fmt(r.sample_s, ".3f"),
        _fmt(r.peak_mib, ".0f"),
        r.note,
    ]
    return "| " + " | ".join(cells) + " |"


def _ints(text: str, option: str) -> list[int]:
    """Comma-separated positive integers, or a usage error naming ``option``."""
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=option
        ) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected integers >= 1, got {text!r}", param_hint=option)
    return values


def _presets(text: str) -> list[str]:
    from brainsynth.nn.presets import UNET_PRESETS

    names = [p for p in text.replace(" ", "").split(",") if p]
    unknown = [p for p in names if p not in UNET_PRESETS]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown preset(s) {unknown or text!r}; choose from {', '.join(UNET_PRESETS)}",
            param_hint="--presets",
        )
    return names


def bench(
    presets: str = typer.Option("tiny,small,base", help="comma-separated UNet presets"),
    sizes: str = typer.Option("32,64", help="comma-separated grid sides (cubes)"),
    batch: str = typer.Option("1", "--batch", help="comma-separated batch sizes"),
    device: str = typer.Option("auto", help="cpu | cuda | auto (CPU, plus CUDA when present)"),
    spatial_dims: int = typer.Option(
        3, "--spatial-dims", help="2 or 3", callback=number(low=2, high=3)
    ),
    steps: int = typer.Option(3, help="timed steps per measurement", callback=COUNT),
    budget: float = typer.Option(
        120.0, help="seconds of timed training steps per configuration", callback=POSITIVE
    ),
    out: str = typer.Option(None, "--out", help="also write the results as JSON here"),
) -> None:
    """Time training and sampling steps of the UNet presets; print a Markdown table.

    Exits 1 when a configuration failed (out of memory, say): the others are still measured."""
    import torch

    from brainsynth.errors import InputError
    from brainsynth.io import write_text_atomic

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter(
            f"expected auto, cpu or cuda, got {device!r}", param_hint="--device"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device is available")
    devices = (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if device == "auto" else [device]
    )
    results = run_benchmark(
        _presets(presets),
        _ints(sizes, "--sizes"),
        _ints(batch, "--batch"),
        devices,
        spatial_dims=spatial_dims,
        steps=steps,
        budget_s=budget,
        echo=typer.echo,
    )
    if out:
        write_text_atomic(out, json.dumps([asdict(r) for r in results], indent=1))
    failed = [r for r in results if r.note.startswith("failed")]
    if failed:
        typer.secho(
            f"{len(failed)} of {len(results)} configuration(s) failed:",
            fg=typer.colors.RED,
            err=True,
        )
        for r in failed:
            typer.echo(f"  {r.device} {r.preset} {r.size} batch {r.batch}: {r.note}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(bench)
