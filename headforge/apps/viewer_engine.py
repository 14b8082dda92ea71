"""The viewer's engines: run a plan of control paths on a session's cache, export meshes and videos.

:class:`NeRFFaceShopEngine` drives :class:`~headforge.models.nerffaceshop_controls.HeadControls`
(build / relight / reanimate / render / render_albedo); :class:`EG3DEngine`
serves any EG3D-style generator (``map``, ``synthesize_planes``,
``render_planes``, ``field``) with seed and camera only. Both keep per-session
work in a :class:`ViewerSession`, which the browser app stores in ``gr.State``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from headforge.apps.generate import camera_labels, frontal_label, latent_for_seed
from headforge.apps.mesh import extract_mesh
from headforge.apps.video import orbit_angles
from headforge.apps.viewer_state import DISPLAYS, Stage, ViewSettings, plan_update
from headforge.imaging import depth_to_uint8, to_uint8, write_video
from headforge.lighting import directional_light_sh, render_sh_sphere

__all__ = ["EG3DEngine", "NeRFFaceShopEngine", "ViewerSession", "light_sh", "make_engine"]

#: Shown images are enlarged (nearest neighbour) to at least this many pixels a side.
DISPLAY_MIN_SIZE = 256
#: EG3D's shape threshold on the raw density; fields that never reach it fall back to "auto".
MESH_LEVEL = 10.0


@dataclass
class ViewerSession:
    """What one browser session keeps between events.

    Attributes:
        settings: the settings ``cache`` and ``passes`` were made for (None: nothing yet).
        cache: the engine's reusable work (a HeadCache, or EG3D's (ws, planes)).
        passes: the last render's displayable passes, name -> uint8 (H, W, 3).
        last_stages: the stages the last update ran (for the status line and tests).
    """

    settings: ViewSettings | None = None
    cache: Any = None
    passes: dict[str, np.ndarray] = field(default_factory=dict)
    last_stages: tuple[Stage, ...] = ()


def light_sh(settings: ViewSettings, device: torch.device | str = "cpu") -> torch.Tensor:
    """The directional light of the settings as SH (1, 9, 3).

    The light arrives from azimuth / elevation (degrees): azimuth 0, elevation 0
    is straight in front of the face (+z), positive azimuth towards world +x
    (image right in the frontal view), positive elevation from above (+y).
    """
    azimuth, elevation = math.radians(settings.light_azimuth), math.radians(settings.light_elevation)
    direction = torch.tensor(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ],
        device=device,
    )
    return directional_light_sh(direction, settings.light_intensity, settings.ambient)[None]


def _camera(settings: ViewSettings, device: torch.device | str) -> torch.Tensor:
    """The rendering camera (1, 25) at the settings' yaw / pitch."""
    yaw = torch.tensor([math.radians(settings.yaw)])
    pitch = torch.tensor([math.radians(settings.pitch)])
    return camera_labels(yaw, pitch, device)


def _grey_to_rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array


def _render_passes(output: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A render's displayable passes as uint8 (H, W, 3): image, albedo, shading, depth when present."""
    passes = {"image": to_uint8(output["image"])[0]}
    if "albedo" in output:
        passes["albedo"] = to_uint8(output["albedo"])[0]
    if "shading" in output:
        # Shading multiplies the albedo and is about 1 where lit: show [0, 2] as black to white.
        passes["shading"] = to_uint8(output["shading"].clamp(0, 2) - 1)[0]
    passes["depth"] = depth_to_uint8(output["image_depth"], output["opacity"])[0]
    return {name: _grey_to_rgb(array) for name, array in passes.items()}


def display_image(passes: dict[str, np.ndarray], display: str) -> np.ndarray:
    """One pass enlarged (nearest neighbour) to at least :data:`DISPLAY_MIN_SIZE` pixels a side."""
    array = passes[display]
    scale = max(1, math.ceil(DISPLAY_MIN_SIZE / max(array.shape[:2])))
    if scale == 1:
        return array
    size = (array.shape[1] * scale, array.shape[0] * scale)
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST))


class _Engine:
    """Shared plumbing: plan, run, export. Subclasses provide the model-specific stages."""

    animatable = False
    relightable = False
    displays: tuple[str, ...] = ("image", "depth")
    motion_count = 0
    expression_count = 0  # head-model expression sliders (a driving encoder is loaded)

    def __init__(self, generator: nn.Module, device: torch.device | str = "cpu") -> None:
        self.generator = generator
        self.device = torch.device(device)

    # Model-specific stages --------------------------------------------------------------
    def build(self, settings: ViewSettings) -> Any:
        raise NotImplementedError

    def restyle(self, cache: Any, settings: ViewSettings, relight: bool, reanimate: bool) -> Any:
        raise NotImplementedError

    def render(self, cache: Any, camera: torch.Tensor, albedo_only: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mesh_field(self, cache: Any):
        """The field whose density and colour the mesh export samples."""
        raise NotImplementedError

    # Shared ---------------------------------------------------------------------------
    @torch.inference_mode()
    def update(self, session: ViewerSession, settings: ViewSettings) -> ViewerSession:
        """Bring ``session`` to ``settings`` running only the stages :func:`plan_update` asks for."""
        stages = plan_update(
            session.settings, settings, frozenset(session.passes), self.animatable, self.relightable
        )
        cache, passes = session.cache, session.passes
        if Stage.BUILD in stages:
            cache = self.build(settings)
        elif Stage.RELIGHT in stages or Stage.REANIMATE in stages:
            cache = self.restyle(cache, settings, Stage.RELIGHT in stages, Stage.REANIMATE in stages)
        if Stage.RENDER in stages or Stage.RENDER_ALBEDO in stages:
            output = self.render(cache, _camera(settings, self.device), Stage.RENDER_ALBEDO in stages)
            passes = _render_passes(output)
        return ViewerSession(settings, cache, passes, stages)

    def light_preview(self, settings: ViewSettings, resolution: int = 128) -> np.ndarray | None:
        """The light on a Lambertian sphere, uint8 (R, R, 3); None for models without lighting."""
        if not self.relightable:
            return None
        return render_sh_sphere(self.lighting(settings).cpu()[0], resolution).numpy()

    def lighting(self, settings: ViewSettings) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def export_mesh(self, session: ViewerSession, out_path: Path, resolution: int = 128) -> tuple[Path, str]:
        """Write the head as a PLY (vertex colours from the albedo); return the path and the level used."""
        half_extent = self.generator.config.box_warp / 2
        mesh_field = self.mesh_field(session.cache)
        try:
            mesh = extract_mesh(mesh_field, resolution, half_extent, MESH_LEVEL, self.device)
            level = f"{MESH_LEVEL:g}"
        except ValueError:
            # Young or tiny models may never reach EG3D's threshold: take the field's own scale.
            mesh = extract_mesh(mesh_field, resolution, half_extent, "auto", self.device)
            level = "auto"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        mesh.export(out_path)
        return out_path, level

    @torch.inference_mode()
    def export_orbit(self, session: ViewerSession, out_path: Path, frames: int = 48, fps: int = 24) -> Path:
        """An orbit around the session's head (current identity, animation and light) as an MP4."""
        yaw, pitch = orbit_angles(frames)
        settings = session.settings
        yaw = yaw + math.radians(settings.yaw)
        pitch = pitch + math.radians(settings.pitch)
        albedo_only = settings.display == "albedo"

        def stream():
            for i in range(frames):
                camera = camera_labels(yaw[i : i + 1], pitch[i : i + 1], self.device)
                output = self.render(session.cache, camera, albedo_only)
                yield _render_passes(output)[settings.display if settings.display != "depth" else "image"]

        return write_video(stream(), out_path, fps=fps)


class NeRFFaceShopEngine(_Engine):
    """Identity, animation, lighting and camera of a NeRFFaceShop generator via HeadControls.

    Args:
        generator: a NeRFFaceShopGenerator in eval mode.
        motion_count: how many leading components of m get sliders.
        encoder: an optional driving encoder E (``headforge.models.nerffaceshop_encoder``):
            head-model coefficients -> m; adds the "head_model" animation source.
        expression_count: how many leading expression coefficients get sliders (with an encoder).
    """

    animatable = True
    relightable = True
    displays = DISPLAYS

    def __init__(
        self,
        generator: nn.Module,
        device: torch.device | str = "cpu",
        motion_count: int = 4,
        encoder: nn.Module | None = None,
        expression_count: int = 6,
    ) -> None:
        from headforge.models.nerffaceshop_controls import HeadControls

        super().__init__(generator, device)
        self.controls = HeadControls(generator, noise_mode="const")
        self.motion_count = min(motion_count, generator.config.motion_dim)
        self.encoder = encoder
        if encoder is not None:
            if encoder.config.motion_dim != generator.config.motion_dim:
                raise ValueError(
                    f"the encoder maps to m of {encoder.config.motion_dim} numbers, "
                    f"the generator's m has {generator.config.motion_dim}"
                )
            self.encoder = encoder.to(self.device).eval().requires_grad_(False)
            self.expression_count = min(expression_count, encoder.config.expression_dim)

    def motion(self, settings: ViewSettings) -> torch.Tensor:
        """m (1, motion_dim) from the settings' animation source.

        "latent": the sliders' leading components, the rest from the animation
        seed (0: zeros). "head_model": E([expression (leading from the sliders,
        rest 0), jaw axis-angle (jaw_open, 0, 0)]).
        """
        if settings.animation_source == "head_model":
            config = self.encoder.config
            coefficients = torch.zeros(1, config.input_dim)
            coefficients[0, : self.expression_count] = torch.tensor(settings.expression)
            coefficients[0, config.expression_dim] = settings.jaw_open  # jaw rotation about x opens the mouth
            return self.encoder(coefficients.to(self.device))
        dim = self.generator.config.motion_dim
        if settings.animation_seed == 0:
            m = torch.zeros(1, dim)
        else:
            m = torch.randn(1, dim, generator=torch.Generator().manual_seed(settings.animation_seed))
        m[0, : self.motion_count] = torch.tensor(settings.motion, dtype=m.dtype)
        return m.to(self.device)

    def random_motion_leading(self, animation_seed: int) -> tuple[float, ...]:
        """The leading components of the seed's m (for the sliders), clipped to the slider range."""
        m = torch.randn(
            1, self.generator.config.motion_dim, generator=torch.Generator().manual_seed(animation_seed)
        )
        return tuple(float(v) for v in m[0, : self.motion_count].clamp(-3, 3))

    def lighting(self, settings: ViewSettings) -> torch.Tensor:
        if settings.average_light:
            return self.generator.sh_avg.reshape(1, 9, 3).to(self.device)
        return light_sh(settings, self.device)

    def build(self, settings: ViewSettings):
        z = latent_for_seed(settings.seed, self.generator.config.z_dim, self.device)
        return self.controls.build(
            z,
            frontal_label(1, self.device),
            self.motion(settings),
            self.lighting(settings),
            settings.truncation,
        )

    def restyle(self, cache, settings: ViewSettings, relight: bool, reanimate: bool):
        if reanimate:
            if relight:
                # Both changed: swap in the new lighting latent first so B_S runs once, inside reanimate.
                lighting_ws = self.generator.encode_lighting(self.lighting(settings))
                cache = dataclasses.replace(cache, lighting_ws=lighting_ws)
            return self.controls.reanimate(cache, self.motion(settings))
        return self.controls.relight(cache, self.lighting(settings))

    def render(self, cache, camera: torch.Tensor, albedo_only: bool = False) -> dict[str, torch.Tensor]:
        if albedo_only:
            return self.controls.render_albedo(cache, camera)
        return self.controls.render(cache, camera)

    def mesh_field(self, cache):
        # Without shading planes the field's "features" are the albedo: vertex colours from the albedo.
        return self.generator.field(cache.albedo.planes)


class EG3DEngine(_Engine):
    """Seed and camera of any EG3D-style generator (``map`` / ``synthesize_planes`` / ``render_planes``)."""

    def build(self, settings: ViewSettings) -> tuple[torch.Tensor, torch.Tensor]:
        z = latent_for_seed(settings.seed, self.generator.config.z_dim, self.device)
        ws = self.generator.map(z, frontal_label(1, self.device), truncation_psi=settings.truncation)
        return ws, self.generator.synthesize_planes(ws, noise_mode="const")

    def render(self, cache, camera: torch.Tensor, albedo_only: bool = False) -> dict[str, torch.Tensor]:
        ws, planes = cache
        return self.generator.render_planes(planes, ws, camera, perturb=False, noise_mode="const")

    def mesh_field(self, cache):
        return self.generator.field(cache[1])


def make_engine(
    generator: nn.Module,
    device: torch.device | str = "cpu",
    motion_count: int = 4,
    encoder: nn.Module | None = None,
) -> _Engine:
    """The engine for a loaded generator: NeRFFaceShop's controls when it has them, else EG3D's view.

    ``encoder`` (a NeRFFaceShop driving encoder) is only accepted with a NeRFFaceShop generator.
    """
    from headforge.models.nerffaceshop import NeRFFaceShopGenerator

    if isinstance(generator, NeRFFaceShopGenerator):
        return NeRFFaceShopEngine(generator, device, motion_count, encoder)
    if encoder is not None:
        raise ValueError(f"a driving encoder needs a NeRFFaceShop checkpoint, not {type(generator).__name__}")
    return EG3DEngine(generator, device)
