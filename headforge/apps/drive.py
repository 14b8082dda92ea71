"""`headforge drive`: a generated NeRFFaceShop head driven by head-model coefficients (§IV-A).

Per frame, the expression + jaw coefficients go through the trained encoder E
(``headforge.models.nerffaceshop_encoder``) to an animation latent m_hat, which
re-animates one cached identity (``HeadControls.reanimate``): the identity's
mapping and B4 ... B32 run once for the whole video. Optionally the light turns
once around the head (``rotate_sh`` of a directional light) and the camera
sways gently; with a studio clip the driving frame is shown on the left.

Driving coefficients come from

* ``--params FILE.json``: a list of frames ``[{"expression": [...], "jaw": [3]}, ...]``
  (``{"frames": [...]}`` too; ``"pose"`` (FLAME layout, jaw = pose[6:9]) may
  replace ``"jaw"``), or a dataset.json whose ``params`` are used in file order,
  or in frame order of one clip when it has ``clips`` (``--clip-id``);
* ``--clip DIR``: a dataset with ``clips`` and ``params`` (e.g. the studio's
  ``videos`` preset): the frames of one clip (``--clip-id``, default the first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.apps.generate import camera_labels, frontal_label, latent_for_seed
from headforge.imaging import to_uint8, write_video
from headforge.lighting import directional_light_sh, rotate_sh
from headforge.models.nerffaceshop import NeRFFaceShopGenerator
from headforge.models.nerffaceshop_controls import HeadCache, HeadControls
from headforge.models.nerffaceshop_encoder import CoefficientEncoder, coefficient_vector, load_encoder

__all__ = [
    "DrivingSequence",
    "add_drive_parser",
    "camera_schedule",
    "driven_outputs",
    "find_encoder",
    "light_schedule",
    "read_clip",
    "read_params_file",
    "run_drive",
    "write_driven_video",
]


@dataclasses.dataclass
class DrivingSequence:
    """Coefficients (T, E + 3) = [expression, jaw] per frame; driving frames (T, 3, H, W) or None."""

    coefficients: Tensor
    frames: Tensor | None = None


def _frame_coefficients(frames: Sequence[dict]) -> Tensor:
    if not frames:
        raise ValueError("the driving sequence has no frames")
    rows = []
    for index, frame in enumerate(frames):
        try:
            rows.append(coefficient_vector({key: torch.tensor(value) for key, value in frame.items()}))
        except KeyError as error:
            raise ValueError(f"frame {index}: {error.args[0]}") from None
    return torch.stack(rows)


def read_params_file(path: str | Path, clip_id: int | None = None) -> DrivingSequence:
    """Driving coefficients from a JSON file (see the module docstring for the accepted layouts)."""
    document = json.loads(Path(path).read_text())
    if isinstance(document, dict) and "frames" in document:
        document = document["frames"]
    if isinstance(document, list):
        if clip_id is not None:
            raise ValueError(f"{path}: --clip-id needs a dataset.json with 'clips'")
        return DrivingSequence(_frame_coefficients(document))
    if not isinstance(document, dict) or "params" not in document:
        raise ValueError(
            f"{path}: expected a list of frames, {{'frames': [...]}} or a dataset.json with 'params'"
        )
    params = {file: values for file, values in document["params"]}
    order = [file for file, _ in document["params"]]
    if "clips" in document:
        clips: dict[int, list[tuple[int, str]]] = {}
        for file, (clip, frame) in document["clips"]:
            clips.setdefault(int(clip), []).append((int(frame), file))
        chosen = min(clips) if clip_id is None else clip_id
        if chosen not in clips:
            raise ValueError(f"{path}: no clip {chosen} (clips: {sorted(clips)[:20]})")
        order = [file for _, file in sorted(clips[chosen])]
    elif clip_id is not None:
        raise ValueError(f"{path}: --clip-id given but the file has no 'clips'")
    frames = [{k: v for k, v in params[file].items() if k in ("expression", "jaw", "pose")} for file in order]
    return DrivingSequence(_frame_coefficients(frames))


def read_clip(path: str | Path, clip_id: int | None = None) -> DrivingSequence:
    """Coefficients and images of one clip of a dataset with ``clips`` and ``params`` (frame order)."""
    from headforge.data.dataset import HeadDataset

    dataset = HeadDataset(path, check=False)
    clips = dataset.clips()
    chosen = next(iter(clips)) if clip_id is None else clip_id
    if chosen not in clips:
        raise ValueError(f"{path}: no clip {chosen} (clips: {list(clips)[:20]})")
    items = clips[chosen]
    coefficients = coefficient_vector(
        {
            "expression": dataset.params_tensor("expression")[items],
            "pose": dataset.params_tensor("pose")[items],
        }
    )
    frames = torch.stack([dataset[item]["image"] for item in items])
    return DrivingSequence(coefficients, frames)


def light_schedule(frames: int, base: Tensor, rotate: bool) -> Tensor:
    """Lights (T, 9, 3): ``base`` (9, 3) throughout, or a directional light turning once about +y.

    The rotating light starts at the camera (slightly above: direction (0, 0.3, 1))
    and turns by 2 pi t / T around the vertical axis with ``rotate_sh``.
    """
    if not rotate:
        return base.reshape(1, 9, 3).expand(frames, -1, -1)
    light = directional_light_sh(torch.tensor([0.0, 0.3, 1.0]), color=0.7, ambient=0.3).to(base)
    angle = 2 * math.pi * torch.arange(frames, dtype=torch.float64) / frames
    cos, sin = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack([cos, zero, sin, zero, one, zero, -sin, zero, cos], dim=1).reshape(frames, 3, 3)
    return rotate_sh(light, rotation.to(base))


def camera_schedule(frames: int, orbit: bool, device: torch.device | str) -> Tensor:
    """Cameras (T, 25): frontal, or a gentle sway (yaw +-0.25 rad, pitch +-0.08 rad)."""
    if not orbit:
        return frontal_label(frames, device)
    t = 2 * math.pi * torch.arange(frames, dtype=torch.float64) / frames
    return camera_labels(0.25 * t.sin(), 0.08 * (2 * t).sin(), device)


def _take(cache: HeadCache, count: int) -> HeadCache:
    """The first ``count`` heads of a cache."""

    def take(value):
        if isinstance(value, Tensor):
            return value[:count]
        if dataclasses.is_dataclass(value):
            return type(value)(**{f.name: take(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return value

    return take(cache)


@torch.no_grad()
def driven_outputs(
    generator: NeRFFaceShopGenerator,
    encoder: CoefficientEncoder,
    coefficients: Tensor,
    seed: int,
    lights: Tensor,
    cameras: Tensor,
    truncation_psi: float = 0.7,
    batch: int = 4,
    passes: tuple[str, ...] = ("image",),
) -> Iterator[dict[str, Tensor]]:
    """Render outputs of consecutive chunks of at most ``batch`` frames.

    Args: coefficients (T, E + 3), lights (T, 9, 3), cameras (T, 25); ``passes``
    are the super-resolved outputs (``image``, ``albedo``). The identity is
    the seed's (``latent_for_seed``), conditioned on the frontal camera.
    """
    device = generator.sh_avg.device
    count = coefficients.shape[0]
    if lights.shape[0] != count or cameras.shape[0] != count:
        raise ValueError(f"need one light and one camera per frame ({count})")
    controls = HeadControls(generator, noise_mode="const")
    width = min(batch, count)
    z = latent_for_seed(seed, generator.config.z_dim, device).expand(width, -1)
    motion = encoder(coefficients[:1].to(device)).expand(width, -1)
    identity = controls.build(
        z, frontal_label(width, device), motion, lights[:1].to(device).expand(width, -1, -1), truncation_psi
    )
    for start in range(0, count, width):
        stop = min(start + width, count)
        cache = _take(identity, stop - start)
        # New light first (no shading pass), then the animation, whose B_S pass reads the new light.
        cache = dataclasses.replace(
            cache, lighting_ws=generator.encode_lighting(lights[start:stop].to(device))
        )
        cache = controls.reanimate(cache, encoder(coefficients[start:stop].to(device)))
        yield controls.render(cache, cameras[start:stop].to(device), superresolve=passes)


def _side_by_side(driving: Tensor, driven: Tensor) -> np.ndarray:
    """Driving frames resized to the driven frames' size, left; driven, right: uint8 (B, H, 2W, 3)."""
    size = driven.shape[-2:]
    if driving.shape[-2:] != size:
        driving = F.interpolate(driving, size=size, mode="bilinear", align_corners=False, antialias=True)
    return np.concatenate([to_uint8(driving), to_uint8(driven)], axis=2)


def write_driven_video(
    generator: NeRFFaceShopGenerator,
    encoder: CoefficientEncoder,
    sequence: DrivingSequence,
    seed: int,
    out_path: str | Path,
    rotate_light: bool = False,
    orbit: bool = False,
    fps: int = 30,
    truncation_psi: float = 0.7,
    batch: int = 4,
) -> Path:
    """Render the driven head for every frame of ``sequence`` and write an H.264 MP4."""
    if encoder.config.motion_dim != generator.config.motion_dim:
        raise ValueError(
            f"the encoder predicts m of size {encoder.config.motion_dim}, the generator takes "
            f"{generator.config.motion_dim}: was it trained for another checkpoint?"
        )
    count = sequence.coefficients.shape[0]
    device = generator.sh_avg.device
    lights = light_schedule(count, generator.sh_avg.reshape(9, 3), rotate_light)
    cameras = camera_schedule(count, orbit, device)

    def frames() -> Iterator[np.ndarray]:
        start = 0
        for output in driven_outputs(
            generator, encoder, sequence.coefficients, seed, lights, cameras, truncation_psi, batch
        ):
            stop = start + output["image"].shape[0]
            if sequence.frames is None:
                yield from to_uint8(output["image"])
            else:
                yield from _side_by_side(sequence.frames[start:stop].to(device), output["image"])
            start = stop

    return write_video(frames(), out_path, fps=fps)


def find_encoder(checkpoint: str | Path) -> Path:
    """The encoder next to a checkpoint: ``encoder.safetensors`` in its folder or a ``driver/`` folder.

    Looks in the run folder (or the checkpoint's folder), its ``driver/``
    subfolder, and the ``driver/`` folder beside a ``checkpoints/`` folder.
    """
    checkpoint = Path(checkpoint)
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    candidates = [folder / "encoder.safetensors", folder / "driver" / "encoder.safetensors"]
    candidates.append(folder.parent / "driver" / "encoder.safetensors")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    listed = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no driving encoder found (looked at {listed}); train one with "
        "`headforge train-driver` or pass --encoder"
    )


def add_drive_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``headforge drive --ckpt CKPT --params FILE.json | --clip DIR --seed S --out driven.mp4``."""
    p = subparsers.add_parser(
        "drive",
        help="drive a generated NeRFFaceShop head by head-model coefficients (H.264 MP4)",
        description="Map per-frame expression + jaw coefficients through the trained encoder to "
        "animation latents and render one seed's head, optionally under a rotating light.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="NeRFFaceShop checkpoint or run folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--params", type=Path, help="JSON of per-frame coefficients (see docs)")
    source.add_argument("--clip", type=Path, help="dataset folder with clips and params (studio videos)")
    p.add_argument("--clip-id", type=int, default=None, help="clip to follow (default: the first)")
    p.add_argument("--encoder", type=Path, default=None, help="encoder .safetensors (default: beside --ckpt)")
    p.add_argument("--seed", type=int, default=0, help="identity seed (default 0)")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument(
        "--rotate-light", action="store_true", help="turn a directional light once around the head"
    )
    p.add_argument("--orbit", action="store_true", help="sway the camera gently instead of a frontal view")
    p.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--batch", type=int, default=4, help="frames rendered at once (default 4)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=run_drive)
    return p


def run_drive(args: argparse.Namespace) -> int:
    """Entry point of ``headforge drive``."""
    from headforge.runtime import default_device
    from headforge.training.nerffaceshop_driving import load_nerffaceshop

    device = default_device(args.device)
    generator, _ = load_nerffaceshop(args.ckpt, device)
    encoder, _ = load_encoder(args.encoder or find_encoder(args.ckpt), device)
    sequence = (
        read_clip(args.clip, args.clip_id) if args.clip else read_params_file(args.params, args.clip_id)
    )
    path = write_driven_video(
        generator,
        encoder,
        sequence,
        args.seed,
        args.out,
        rotate_light=args.rotate_light,
        orbit=args.orbit,
        fps=args.fps,
        truncation_psi=args.trunc,
        batch=args.batch,
    )
    print(f"wrote {path} ({sequence.coefficients.shape[0]} frames)")
    return 0
