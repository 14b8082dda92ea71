"""Can a NeRFFaceShop preset draw the training faces at all? Fit by reconstruction, no GAN.

When a GAN run plateaus, this separates "the architecture cannot represent
the data (or learns it very slowly)" from "the adversarial game is stuck". It
fits, from a fresh initialisation and with plain L1 losses, a few dataset
images (spread over the dataset: different identities) in three ways:

* ``generator``: the whole generator (mapping, rolled-out backbone, warp,
  decoders, renderer, super-resolution), one fixed z per image, the image's
  own camera and SH, animation m = 0. Loss: L1 of the 64 px image plus L1 of
  the raw neural rendering against the area-downsampled target (the two
  images EG3D's dual discriminator sees).
* ``unlit``: the whole generator without its shading tri-planes (the image
  is the albedo), to tell whether the learnt shading slows the fit. Same loss.
* ``planes`` (control): the same decoders, renderer and super-resolution,
  but the albedo and shading tri-planes are free tensors (one set per image)
  instead of the backbone's output. Same loss.
* ``2d`` (calibration): a plain 2D StyleGAN2 synthesis network with the
  preset's channel widths painting the images directly. Loss: L1 of the image.

Writes ``<out>/<mode>.png`` (targets on top, fits below; ``planes`` adds the
raw neural rendering) and prints the loss every 50 steps. Example (CPU, the
small preset, 4 images, 300 steps: about 4 minutes on 2 idle cores):

    python benchmarks/reconstruction_capacity.py --data STUDIO_VIDEOS --out /tmp/capacity
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from headforge.data.dataset import HeadDataset, spread_indices
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, preset
from headforge.nn.stylegan2 import SynthesisNetwork
from headforge.training.run_log import image_grid

MODES = ("generator", "unlit", "planes", "2d")


def dual_l1(out: dict[str, Tensor], target: Tensor) -> Tensor:
    """L1 of the super-resolved image plus L1 of the raw rendering against the downsampled target."""
    raw = out["image_raw"][:, :3]
    return (out["image"] - target).abs().mean() + (
        raw - F.interpolate(target, size=raw.shape[-1], mode="area")
    ).abs().mean()


def save_rows(path: Path, rows: list[Tensor], scale: int = 2) -> None:
    """Rows of (N, 3, H, W) images in [-1, 1] (resized to the first row's size) as one PNG."""
    size = rows[0].shape[-1]
    rows = [F.interpolate(row.detach().float(), size=size, mode="nearest") for row in rows]
    image = Image.fromarray(image_grid(torch.cat(rows), grid=(rows[0].shape[0], len(rows))))
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def fit(mode: str, args: argparse.Namespace, batch: dict[str, Tensor], out_dir: Path) -> float:
    """Fit one way for ``args.steps`` Adam steps; returns the last loss."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    target = batch["image"].to(device)
    camera, sh = batch["camera"].to(device), batch["sh"].to(device)
    count = target.shape[0]
    generator = NeRFFaceShopGenerator(preset(args.preset)).to(device).train()
    config = generator.config
    z = torch.randn(count, config.z_dim, device=device)
    m = torch.zeros(count, config.motion_dim, device=device)
    if mode in ("generator", "unlit"):
        groups = [{"params": list(generator.parameters()), "lr": args.lr}]
    elif mode == "planes":
        with torch.no_grad():
            start = generator(z, camera, m, sh, noise_mode="const")
        ws = start["ws"]
        albedo = torch.nn.Parameter(start["planes"].clone())
        shading = torch.nn.Parameter(start["shading_planes"].clone())
        networks = [generator.albedo_decoder, generator.shading_decoder, generator.superresolution]
        groups = [
            {"params": [albedo, shading], "lr": args.plane_lr},
            {"params": [p for net in networks for p in net.parameters()], "lr": args.lr},
        ]
    else:
        painter = SynthesisNetwork(
            config.w_dim,
            config.output_resolution,
            3,
            channel_base=config.channel_base,
            channel_max=config.channel_max,
        ).to(device)
        ws = torch.randn(count, 1, config.w_dim, device=device).expand(-1, painter.num_ws, -1)
        groups = [{"params": list(painter.parameters()), "lr": args.lr}]
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99))
    started = time.perf_counter()
    for step in range(args.steps + 1):
        if mode == "generator":
            out = generator(z, camera, m, sh, noise_mode="const")
            loss = dual_l1(out, target)
        elif mode == "unlit":
            ws = generator.encode_identity(z, camera)
            base = generator.synthesize_to_32(ws, noise_mode="const")
            animated = generator.animate(base, generator.expression_field(generator.encode_motion(m)))
            albedo_planes = generator.synthesize_albedo_planes(ws, animated, noise_mode="const").planes
            out = generator.render(albedo_planes, None, ws, camera, noise_mode="const")
            loss = dual_l1(out, target)
        elif mode == "planes":
            out = generator.render(albedo, shading, ws, camera, noise_mode="const")
            loss = dual_l1(out, target)
        else:
            out = {"image": painter(ws, noise_mode="const")}
            loss = (out["image"] - target).abs().mean()
        if step % 50 == 0 or step == args.steps:
            print(f"{mode:>9} step {step:4d}  L1 {loss.item():.4f}  {time.perf_counter() - started:6.1f} s")
        if step == args.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    rows = [target, out["image"]] + ([out["image_raw"][:, :3]] if mode == "planes" else [])
    save_rows(out_dir / f"{mode}.png", rows)
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a headforge dataset with camera labels and SH")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--preset", default="small", help="NeRFFaceShop preset (default small)")
    parser.add_argument("--images", type=int, default=4, help="images to fit, spread over the dataset")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate of network weights")
    parser.add_argument("--plane-lr", type=float, default=1e-2, help="Adam learning rate of free tri-planes")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    resolution = preset(args.preset).output_resolution
    dataset = HeadDataset(args.data, resolution=resolution, check=False)
    if not dataset.has_sh:
        parser.error(f"{args.data}: the dataset has no SH lighting labels, which NeRFFaceShop needs")
    samples = [dataset[index] for index in spread_indices(len(dataset), args.images)]
    batch = {key: torch.stack([sample[key] for sample in samples]) for key in ("image", "camera", "sh")}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    losses = {mode: fit(mode, args, batch, out_dir) for mode in modes}
    print("final L1:", ", ".join(f"{mode} {loss:.4f}" for mode, loss in losses.items()))
    print(f"images: {', '.join(str(out_dir / f'{mode}.png') for mode in modes)}")


if __name__ == "__main__":
    main()
