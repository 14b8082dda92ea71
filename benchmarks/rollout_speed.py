"""The factored 3D-aware convolution against the explicit [plane, context] input it replaces.

Every layer of NeRFFaceShop's rolled-out synthesis convolves each plane
together with the axis-pooled context of the other two planes (3x the
channels). ``RolloutSynthesisLayer`` computes the context's share on a
3-line strip instead (``headforge.nn.rollout.axis_aware_convolution``). This
script times one forward + backward pass of both forms of the layers of the
``small`` preset's B64 block and shading blocks, in the same run, and prints
their ratio and the largest difference of their outputs. Usage:

    .venv/bin/python benchmarks/rollout_speed.py [--repeats 5] [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from headforge.runtime import tune_cpu_allocator

# (name, in_channels, out_channels, resolution, up) of the small preset's 64^2 layers.
LAYERS = [
    ("B64.conv0 (2x up)", 48, 24, 64, 2),
    ("B64.conv1", 24, 24, 64, 1),
    ("B_S.conv (shading)", 24, 24, 64, 1),
]


def explicit(layer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The layer's definition: its SynthesisLayer on the concatenated 3C-channel input."""
    from headforge.nn.rollout import axis_pooled_context

    batch, planes, channels, height, width = x.shape
    mixed = torch.cat([x, axis_pooled_context(x, layer.layout)], dim=2)
    flat = mixed.reshape(batch * planes, 3 * channels, height, width)
    if x.device.type == "cpu":
        flat = flat.contiguous(memory_format=torch.channels_last)
    # One style per sample, shared by its three planes (rows ordered sample-major).
    y = layer.layer(flat, w.repeat_interleave(planes, dim=0), noise_mode="const", fused_modconv=False)
    return y.reshape(batch, planes, *y.shape[1:])


def time_pass(run, repeats: int) -> float:
    """Warm median seconds of forward + backward."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    tune_cpu_allocator()
    from headforge.nn.rollout import RolloutSynthesisLayer

    torch.manual_seed(0)
    rows = []
    for name, cin, cout, resolution, up in LAYERS:
        layer = RolloutSynthesisLayer(cin, cout, w_dim=256, resolution=resolution, up=up)
        x = torch.randn(args.batch, 3, cin, resolution // up, resolution // up, requires_grad=True)
        w = torch.randn(args.batch, 256)

        def factored(layer=layer, x=x, w=w) -> torch.Tensor:
            return layer(x, w, noise_mode="const")

        def reference(layer=layer, x=x, w=w) -> torch.Tensor:
            return explicit(layer, x, w)

        def step(forward) -> None:
            forward().square().mean().backward()

        with torch.no_grad():
            difference = (factored() - reference()).abs().max().item()
        seconds_factored = time_pass(lambda: step(factored), args.repeats)
        seconds_explicit = time_pass(lambda: step(reference), args.repeats)
        rows.append(
            dict(
                layer=name,
                explicit_s=seconds_explicit,
                factored_s=seconds_factored,
                speedup=seconds_explicit / seconds_factored,
                max_abs_difference=difference,
            )
        )
        print(
            f"{name:20s} explicit {seconds_explicit * 1e3:7.1f} ms  factored {seconds_factored * 1e3:7.1f} ms"
            f"  {seconds_explicit / seconds_factored:4.2f}x  max |diff| {difference:.1e}"
        )
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "layers": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
