"""What a generator renders for TI, DS and MV (``headforge eval --metrics ti,ds,mv``).

NeRFFaceShop (:func:`consistency_samples_from_nerffaceshop`), per identity k
(latent seed ``seed + k``, one light drawn from a pool of real lights):

============  =======================================================  =========================
rows          what changes (everything else as the anchor)             serves
============  =======================================================  =========================
E             animation latent m_1 .. m_E, frontal camera, light l_1   TI, DS expression group
L - 1         light l_2 .. l_L (``relight``), m_1, frontal camera      DS light group (+ anchor)
P             camera (pairs a few degrees apart), m_1, light l_1       DS pose group, MV pairs
============  =======================================================  =========================

The anchor (row 0: m_1, l_1, frontal) belongs to the expression and light
groups. Animations reuse the identity stages and relighting the albedo
stages (``HeadControls``); the P views only re-render. EG3D
(:func:`consistency_samples_from_eg3d`) has no animation or light input: P
paired views per identity (DS pose group, MV).

Views come in pairs: a camera from the FFHQ-like pose distribution, then one
moved from it by ``PAIR_DEGREES`` (uniform magnitude, uniform direction in
(yaw, pitch)). Everything random comes from a CPU generator seeded from
``(seed, k)`` (a stream apart from ``samples_from_*``'s), so a seed gives the
same images on every device.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.apps.generate import camera_labels, frontal_label, latent_for_seed, render_seed
from headforge.cameras import sample_ffhq_poses
from headforge.eval.estimators.targets import head_pose_angles
from headforge.eval.protocols import POSE_DIM, EvalSamples, check_light_pool
from headforge.models.nerffaceshop_controls import HeadCache, HeadControls

__all__ = [
    "PAIR_DEGREES",
    "consistency_samples_from_eg3d",
    "consistency_samples_from_nerffaceshop",
    "paired_views",
]

#: range of the (yaw, pitch) orbit step between the two cameras of an MV pair, degrees.
PAIR_DEGREES = (5.0, 20.0)
#: offset of this module's random stream from the other protocols' (same seed, other draws).
_STREAM = 7_919


def _rng(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + index) * 8_191 + _STREAM)


def paired_views(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(count,) yaw and pitch, radians: views 2q and 2q + 1 are ``PAIR_DEGREES`` apart in orbit angle.

    A last unpaired view (odd count) is an FFHQ-like camera of its own.
    """
    pairs = math.ceil(count / 2)
    yaw, pitch = sample_ffhq_poses(pairs, generator=generator)
    low, high = (math.radians(value) for value in PAIR_DEGREES)
    step = low + (high - low) * torch.rand(pairs, generator=generator)
    direction = 2 * math.pi * torch.rand(pairs, generator=generator)
    partner_yaw, partner_pitch = yaw + step * torch.cos(direction), pitch + step * torch.sin(direction)
    yaws = torch.stack([yaw, partner_yaw], dim=1).reshape(-1)[:count]
    pitches = torch.stack([pitch, partner_pitch], dim=1).reshape(-1)[:count]
    return yaws, pitches


def _take(value: Any, index: Tensor) -> Any:
    """Rows ``index`` of every tensor in a (nested dataclass) cache; other values as they are."""
    if isinstance(value, Tensor):
        return value[index]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _take(getattr(value, f.name), index) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **fields)
    return value


def _pair_rows(first_row: int, count: int) -> Tensor:
    """(count // 2, 2) row indices (first + 2q, first + 2q + 1)."""
    starts = first_row + 2 * torch.arange(count // 2)
    return torch.stack([starts, starts + 1], dim=1)


def _collect(outputs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {
        "image": torch.cat([o["image"].float().clamp(-1, 1).cpu() for o in outputs]),
        "depth": torch.cat([o["image_depth"].float().cpu() for o in outputs]),
        "surface": torch.cat([o["opacity"].float().cpu() for o in outputs]),
    }


def _group_ids(identity: int, rows: int, members: list[int] | range) -> Tensor:
    ids = torch.full((rows,), -1, dtype=torch.int64)
    ids[list(members)] = identity
    return ids


@torch.no_grad()
def consistency_samples_from_nerffaceshop(
    generator: torch.nn.Module,
    lights: Tensor,
    identities: int,
    expressions: int,
    views: int,
    light_count: int,
    seed: int,
    truncation_psi: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalSamples:
    """TI / DS / MV images of a NeRFFaceShop generator (module table), identity-major.

    Args:
        generator: a NeRFFaceShop generator.
        lights: (L_pool, 9, 3) pool of real lights (e.g. a dataset's SH labels).
        identities: identities k = 0 .. identities - 1 (latent seed ``seed + k``).
        expressions: E >= 1 animation latents m ~ N(0, I) per identity.
        views: P >= 0 cameras per identity (pairs, see ``paired_views``).
        light_count: L >= 1 lights per identity, drawn from the pool (the first is the anchor's).
        seed: the seed of latents, lights, animations and cameras.

    Returns:
        :class:`EvalSamples` with images, requested pose and SH, identity, shape groups (the
        E animations), attribute groups, cameras, depth, opacity and view pairs.
    """
    if expressions < 1 or light_count < 1 or views < 0:
        raise ValueError("need expressions >= 1, lights >= 1 and views >= 0")
    check_light_pool(lights)
    controls = HeadControls(generator, noise_mode="const")
    per_identity = expressions + light_count - 1 + views
    parts: list[dict[str, Tensor]] = []
    groups: dict[str, list[Tensor]] = {"expression": [], "light": [], "pose": []}
    pairs = []
    for index in tqdm(range(identities), desc="consistency", unit="id", disable=not progress):
        rng = _rng(seed, index)
        light_index = torch.randint(lights.shape[0], (light_count,), generator=rng)
        identity_lights = lights[light_index].to(device, torch.float32)
        motion = torch.randn(expressions, generator.config.motion_dim, generator=rng).to(device)
        yaw, pitch = paired_views(views, rng)
        z = latent_for_seed(seed + index, generator.config.z_dim, device).expand(expressions, -1)
        anchor_light = identity_lights[:1].expand(expressions, 9, 3)
        cache: HeadCache = controls.build(
            z, frontal_label(expressions, device), motion, anchor_light, truncation_psi
        )
        outputs = [controls.render(cache, frontal_label(expressions, device))]
        cameras = [frontal_label(expressions, device)]
        shs = [anchor_light]
        if light_count > 1:
            relit = controls.relight(
                _take(cache, torch.zeros(light_count - 1, dtype=torch.long)), identity_lights[1:]
            )
            outputs.append(controls.render(relit, frontal_label(light_count - 1, device)))
            cameras.append(frontal_label(light_count - 1, device))
            shs.append(identity_lights[1:])
        if views > 0:
            view_cameras = camera_labels(yaw, pitch, device)
            outputs.append(controls.render(_take(cache, torch.zeros(views, dtype=torch.long)), view_cameras))
            cameras.append(view_cameras)
            shs.append(identity_lights[:1].expand(views, 9, 3))
        part = _collect(outputs)
        part["cameras"] = torch.cat(cameras).cpu()
        part["sh"] = torch.cat(shs).cpu()
        parts.append(part)
        light_rows = [0, *range(expressions, expressions + light_count - 1)]
        pose_start = expressions + light_count - 1
        groups["expression"].append(_group_ids(index, per_identity, range(expressions)))
        groups["light"].append(_group_ids(index, per_identity, light_rows))
        groups["pose"].append(_group_ids(index, per_identity, range(pose_start, per_identity)))
        pairs.append(_pair_rows(index * per_identity + pose_start, views))
    samples = _assemble(parts, groups, pairs, identities, per_identity)
    samples.sh = torch.cat([part["sh"] for part in parts])
    samples.shape_group = samples.attribute_groups["expression"].clone()
    samples.source = {
        "kind": "nerffaceshop-consistency",
        "identities": identities,
        "expressions": expressions,
        "views": views,
        "lights": light_count,
        "seed": seed,
        "truncation_psi": truncation_psi,
        "light_pool": int(lights.shape[0]),
    }
    return samples


@torch.no_grad()
def consistency_samples_from_eg3d(
    generator: torch.nn.Module,
    identities: int,
    views: int,
    seed: int,
    truncation_psi: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalSamples:
    """``views`` paired cameras (``paired_views``) of each of ``identities`` EG3D latents (seed + k).

    Returns:
        :class:`EvalSamples` with images, requested pose, identity, the pose groups (DS pose),
        cameras, depth, opacity and view pairs; no shape, expression or light groups.
    """
    if views < 2:
        raise ValueError(f"need at least 2 views per identity for view pairs, got {views}")
    parts: list[dict[str, Tensor]] = []
    groups: dict[str, list[Tensor]] = {"pose": []}
    pairs = []
    for index in tqdm(range(identities), desc="consistency", unit="id", disable=not progress):
        yaw, pitch = paired_views(views, _rng(seed, index))
        cameras = camera_labels(yaw, pitch, device)
        part = _collect([render_seed(generator, seed + index, cameras, truncation_psi, device)])
        part["cameras"] = cameras.cpu()
        parts.append(part)
        groups["pose"].append(torch.full((views,), index, dtype=torch.int64))
        pairs.append(_pair_rows(index * views, views))
    samples = _assemble(parts, groups, pairs, identities, views)
    samples.source = {
        "kind": "eg3d-consistency",
        "identities": identities,
        "views": views,
        "seed": seed,
        "truncation_psi": truncation_psi,
    }
    return samples


def _assemble(
    parts: list[dict[str, Tensor]],
    groups: dict[str, list[Tensor]],
    pairs: list[Tensor],
    identities: int,
    per_identity: int,
) -> EvalSamples:
    cameras = torch.cat([part["cameras"] for part in parts])
    return EvalSamples(
        torch.cat([part["image"] for part in parts]),
        pose=head_pose_angles(cameras, torch.zeros(cameras.shape[0], POSE_DIM)),
        identity=torch.arange(identities).repeat_interleave(per_identity),
        attribute_groups={name: torch.cat(ids) for name, ids in groups.items()},
        cameras=cameras,
        depth=torch.cat([part["depth"] for part in parts]),
        surface=torch.cat([part["surface"] for part in parts]),
        view_pairs=torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.int64),
    )
