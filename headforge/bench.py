"""`headforge bench`: per-stage generation timings and seconds per training step.

Timings are warm medians: one untimed warm-up, then ``repeats`` timed runs.
Generation is batch 1 under ``torch.inference_mode`` at the preset's initial
neural rendering resolution (64 for ffhq512, the setting EG3D's speed figures
use). Training time is the sum over phases of each phase's warm median divided by
its interval (lazy regularisers amortised), on a random in-memory batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from headforge.models.registry import get_model_spec


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Warm median wall time of ``fn()`` in seconds."""
    fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def bench_generation(spec, generator, repeats: int, device: torch.device) -> dict[str, float]:
    """Warm median seconds of each of the system's generation stages at batch 1."""
    stages = spec.generation_stages(generator, device)
    result = {f"{name}_seconds": time_call(fn, repeats, device) for name, fn in stages.items()}
    result["seconds_per_image"] = result["full_seconds"]
    result["images_per_second"] = 1.0 / result["full_seconds"]
    result["neural_rendering_resolution"] = generator.config.neural_rendering_resolution
    result["output_resolution"] = generator.config.output_resolution
    return result


def bench_training(spec, config, batch: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Seconds per training step at ``batch``: each phase timed alone, lazy ones divided by their interval."""
    from headforge.training.launch import build_benchmark_step

    calls, intervals = build_benchmark_step(spec, config, batch, device)
    phases = {name: time_call(call, repeats, device) for name, call in calls.items()}
    seconds = sum(phases[name] / intervals[name] for name in phases)
    return {
        "seconds_per_step": seconds,
        "batch": batch,
        "phase_seconds": phases,
        "phase_intervals": intervals,
    }


def run_benchmarks(
    model: str,
    presets: list[str],
    repeats: int = 5,
    train_batch: int | None = None,
    train: bool = True,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """One result dict per preset: ``generate`` and ``train`` sections."""
    spec = get_model_spec(model)
    torch_device = torch.device(device)
    results = []
    for name in presets:
        if name not in spec.presets:
            raise ValueError(f"model {model!r} has no preset {name!r}; choose from {', '.join(spec.presets)}")
        config = spec.presets[name]
        torch.manual_seed(0)
        generator = spec.build_generator(config).to(torch_device).eval()
        result: dict[str, Any] = {
            "model": model,
            "preset": name,
            "device": str(torch_device),
            "threads": torch.get_num_threads(),
            "generator_parameters": sum(p.numel() for p in generator.parameters()),
            "generate": bench_generation(spec, generator, repeats, torch_device),
        }
        del generator
        if train:
            batch = train_batch or min(config.batch_size, 4)
            result["train"] = bench_training(spec, config, batch, max(1, min(repeats, 3)), torch_device)
        results.append(result)
    return results


def format_report(results: list[dict[str, Any]]) -> str:
    """A plain-text table of ``run_benchmarks`` results."""
    lines = []
    for result in results:
        gen = result["generate"]
        lines.append(
            f"{result['model']} / {result['preset']} on {result['device']} ({result['threads']} threads), "
            f"G {result['generator_parameters'] / 1e6:.1f} M parameters, "
            f"{gen['output_resolution']}px from {gen['neural_rendering_resolution']}px neural rendering"
        )
        for key, value in gen.items():
            if key.endswith("_seconds") and key != "full_seconds":
                lines.append(f"  {key[: -len('_seconds')]:<16} {value * 1000:10.1f} ms")
        lines.append(
            f"  {'whole image':<16} {gen['seconds_per_image'] * 1000:10.1f} ms "
            f"({gen['images_per_second']:.2f} images/s)"
        )
        if "train" in result:
            train = result["train"]
            lines.append(
                f"  {'train step':<16} {train['seconds_per_step']:10.3f} s at batch {train['batch']}"
            )
    return "\n".join(lines)
