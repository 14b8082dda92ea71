"""EG3D: the tri-plane GAN that every headforge system builds on.

Chan et al., "Efficient Geometry-aware 3D Generative Adversarial Networks"
(CVPR 2022). A mapping network turns a latent ``z`` and the conditioning camera
into styles ``ws``; a StyleGAN2 synthesis network paints three feature planes;
a small decoder turns features sampled from the planes into density and
features; volume rendering gives a low-resolution feature image whose first
three channels are the raw RGB; a style-conditioned super-resolution network
turns it into the final image. A dual discriminator judges the super-resolved
and the raw image together, conditioned on the camera.

Everything numeric lives in the shared parts (``nn/``, ``render/``,
``cameras``); this file only composes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headforge.nn.discriminator import DualDiscriminator
from headforge.nn.stylegan2 import MappingNetwork, SynthesisNetwork
from headforge.nn.superres import SuperResolution
from headforge.nn.triplane import TriplaneDecoder, TriplaneField
from headforge.render.field_images import render_field_images
from headforge.render.renderer import RenderingOptions, VolumeRenderer


@dataclass
class EG3DConfig:
    """Architecture and training defaults of one EG3D preset.

    The output resolution follows the dataset; the preset fixes the neural
    rendering resolution, so the super-resolution factor is derived:
    ``output_resolution / sr_input_resolution``.

    ``superresolution_noise_mode``: "none" (EG3D's ``--sr_noise_mode``
    default: no per-pixel noise in the super-resolution layers, whatever the
    synthesis noise) or "random" (they follow the generator's noise mode:
    random in training, "const" / "none" when the caller asks for them).

    Discriminator augmentation (StyleGAN2-ADA, ``headforge.training.augment``;
    EG3D trains AFHQ with it): ``augment`` "none", "ada" (probability adapted
    towards ``ada_target`` of E[sign(D(real))], moving at most from 0 to 1
    over ``ada_kimg`` thousand images, checked every ``ada_interval`` steps)
    or "fixed" (probability ``augment_p`` throughout; also ADA's start value).
    """

    # Latents and conditioning.
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    mapping_layers: int = 2
    # Tri-plane backbone.
    triplane_resolution: int = 256
    triplane_channels: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    plane_layout: str = "xy_xz_yz"
    # Decoder and rendering.
    decoder_hidden: int = 64
    decoder_lr_multiplier: float = 1.0
    feature_channels: int = 32
    neural_rendering_resolution: int = 64
    neural_rendering_resolution_final: int | None = 128
    neural_rendering_resolution_fade_kimg: float = 1000.0
    num_coarse: int = 48
    num_fine: int = 48
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    density_noise: float = 0.0
    # Super-resolution.
    output_resolution: int = 512
    sr_channel_base: int = 32768
    sr_channel_max: int = 512
    superresolution_noise_mode: str = "none"
    # Discriminator.
    d_channel_base: int = 32768
    d_channel_max: int = 512
    mbstd_group_size: int = 4
    disc_c_noise: float = 0.0
    # Optimisation (EG3D's FFHQ settings).
    batch_size: int = 32
    g_lr: float = 0.0025
    d_lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    density_reg: float = 0.25
    density_reg_interval: int = 4
    density_reg_jitter: float = 0.004
    pose_swap_probability: float = 0.5
    blur_init_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    truncation_psi: float = 0.7
    truncation_cutoff: int | None = 14
    augment: str = "none"
    augment_p: float = 0.0
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    ada_interval: int = 4

    def __post_init__(self) -> None:
        mode = self.superresolution_noise_mode
        if mode not in ("none", "random"):
            raise ValueError(f"superresolution_noise_mode must be 'none' or 'random', got {mode!r}")
        if self.augment not in ("none", "ada", "fixed"):
            raise ValueError(f"augment must be 'none', 'ada' or 'fixed', got {self.augment!r}")
        if not 0.0 <= self.augment_p <= 1.0:
            raise ValueError(f"augment_p must be in [0, 1], got {self.augment_p}")

    def superresolution_noise(self, noise_mode: str) -> str:
        """The super-resolution layers' noise mode when the generator runs with ``noise_mode``."""
        return "none" if self.superresolution_noise_mode == "none" else noise_mode

    @property
    def sr_input_resolution(self) -> int:
        """Resolution the super-resolution network expects (the final neural rendering one)."""
        return self.neural_rendering_resolution_final or self.neural_rendering_resolution

    @property
    def sr_factor(self) -> int:
        factor, remainder = divmod(self.output_resolution, self.sr_input_resolution)
        if remainder or factor not in (1, 2, 4, 8):
            raise ValueError(
                f"output resolution {self.output_resolution} is not 1x, 2x, 4x or 8x the neural "
                f"rendering resolution {self.sr_input_resolution}"
            )
        return factor

    def rendering_options(self, perturb: bool) -> RenderingOptions:
        return RenderingOptions(
            num_coarse=self.num_coarse,
            num_fine=self.num_fine,
            ray_start=self.ray_start,
            ray_end=self.ray_end,
            box_warp=self.box_warp,
            density_noise=self.density_noise if perturb else 0.0,
            perturb=perturb,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EG3DConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown EG3D config keys: {', '.join(unknown)}")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


PRESETS: dict[str, EG3DConfig] = {
    # Seconds per step on a 2-core CPU: for tests and smoke runs.
    "tiny": EG3DConfig(
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        triplane_resolution=32,
        triplane_channels=8,
        channel_base=1024,
        channel_max=32,
        decoder_hidden=16,
        feature_channels=8,
        neural_rendering_resolution=16,
        neural_rendering_resolution_final=None,
        num_coarse=12,
        num_fine=12,
        output_resolution=32,
        sr_channel_base=512,
        sr_channel_max=16,
        d_channel_base=512,
        d_channel_max=32,
        mbstd_group_size=2,
        batch_size=4,
        ema_kimg=0.01,
        truncation_cutoff=None,
    ),
    # Hours on a CPU, minutes on a GPU: 128x128 output from 64x64 neural rendering.
    "small": EG3DConfig(
        z_dim=256,
        w_dim=256,
        triplane_resolution=128,
        triplane_channels=24,
        channel_base=8192,
        channel_max=256,
        decoder_hidden=64,
        feature_channels=24,
        neural_rendering_resolution=32,
        neural_rendering_resolution_final=64,
        neural_rendering_resolution_fade_kimg=200,
        num_coarse=32,
        num_fine=32,
        output_resolution=128,
        sr_channel_base=4096,
        sr_channel_max=128,
        d_channel_base=8192,
        d_channel_max=256,
        batch_size=16,
        ema_kimg=2.0,
    ),
    # The paper's FFHQ 512 settings.
    "ffhq512": EG3DConfig(),
}


def preset(name: str, **overrides: Any) -> EG3DConfig:
    """A copy of a named preset with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown EG3D preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


class TriplaneGenerator(nn.Module):
    """EG3D's generator: z, conditioning camera -> tri-planes -> volume rendering -> image.

    The forward pass is split into the stages that controls can reuse:
    ``mapping`` (z, c -> ws), ``synthesize_planes`` (ws -> planes),
    ``render_planes`` (planes, ws, camera -> image dict).
    """

    def __init__(self, config: EG3DConfig) -> None:
        super().__init__()
        self.config = config
        plane_channels = 3 * config.triplane_channels
        self.backbone = SynthesisNetwork(
            w_dim=config.w_dim,
            img_resolution=config.triplane_resolution,
            img_channels=plane_channels,
            channel_base=config.channel_base,
            channel_max=config.channel_max,
        )
        self.superresolution = SuperResolution(
            in_channels=config.feature_channels,
            img_channels=3,
            input_resolution=config.sr_input_resolution,
            output_resolution=config.output_resolution,
            w_dim=config.w_dim,
            channel_base=config.sr_channel_base,
            channel_max=config.sr_channel_max,
        )
        self.num_ws = self.backbone.num_ws
        self.mapping = MappingNetwork(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            num_layers=config.mapping_layers,
        )
        self.decoder = TriplaneDecoder(
            in_features=config.triplane_channels,
            hidden=config.decoder_hidden,
            out_features=config.feature_channels,
            lr_multiplier=config.decoder_lr_multiplier,
        )
        self.renderer = VolumeRenderer(config.rendering_options(perturb=True))
        self.eval_renderer = VolumeRenderer(config.rendering_options(perturb=False))

    # ------------------------------------------------------------------ stages
    def map(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Latents (B, z_dim) and conditioning labels (B, 25) -> styles (B, num_ws, w_dim)."""
        return self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )

    def synthesize_planes(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """Styles (B, num_ws, w_dim) -> tri-planes (B, 3, C, R, R)."""
        planes = self.backbone(ws, noise_mode=noise_mode)
        batch, _, height, width = planes.shape
        return planes.view(batch, 3, self.config.triplane_channels, height, width)

    def field(self, planes: torch.Tensor) -> TriplaneField:
        """The radiance field of some tri-planes, in the renderer's field protocol."""
        return TriplaneField(
            planes, self.decoder, layout=self.config.plane_layout, box_warp=self.config.box_warp
        )

    def sample_density(self, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Raw density (B, N, 1) at world points (B, N, 3) (before the renderer's activation)."""
        return self.field(planes)(points, torch.zeros_like(points))["sigma"]

    def render_raw(
        self,
        planes: torch.Tensor,
        camera: torch.Tensor,
        neural_rendering_resolution: int | None = None,
        perturb: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Volume-render tri-planes (B, 3, C, R, R) from camera labels (B, 25).

        Returns ``image_raw`` (B, 3, h, w) in [-1, 1], ``features`` (B, F, h, w)
        (raw RGB first), ``image_depth`` (B, 1, h, w) in world units along the
        ray and ``opacity`` (B, 1, h, w).
        """
        resolution = neural_rendering_resolution or self.config.neural_rendering_resolution
        perturb = self.training if perturb is None else perturb
        renderer = self.renderer if perturb else self.eval_renderer
        rendered = render_field_images(renderer, self.field(planes), camera, resolution)
        image_raw = rendered["features"][:, :3] * 2 - 1  # the decoder's sigmoid range -> [-1, 1], as EG3D.
        return {
            "image_raw": image_raw,
            "features": torch.cat([image_raw, rendered["features"][:, 3:]], dim=1),
            "image_depth": rendered["depth"],
            "opacity": rendered["opacity"],
        }

    def superresolve(
        self, raw: dict[str, torch.Tensor], ws: torch.Tensor, noise_mode: str = "random"
    ) -> torch.Tensor:
        """The final image (B, 3, H, W) from ``render_raw``'s output and the styles."""
        return self.superresolution(
            raw["image_raw"], raw["features"], ws, noise_mode=self.config.superresolution_noise(noise_mode)
        )

    def render_planes(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        camera: torch.Tensor,
        neural_rendering_resolution: int | None = None,
        perturb: bool | None = None,
        noise_mode: str = "random",
    ) -> dict[str, torch.Tensor]:
        """``render_raw`` followed by super-resolution: adds ``image`` (B, 3, H, W) in [-1, 1]."""
        output = self.render_raw(planes, camera, neural_rendering_resolution, perturb)
        output["image"] = self.superresolve(output, ws, noise_mode)
        return output

    # ------------------------------------------------------------------ whole pass
    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        camera: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        neural_rendering_resolution: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
        perturb: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """z (B, z_dim), conditioning label c (B, 25), rendering camera (B, 25; default c)."""
        ws = self.map(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        planes = self.synthesize_planes(ws, noise_mode=noise_mode)
        output = self.render_planes(
            planes, ws, c if camera is None else camera, neural_rendering_resolution, perturb, noise_mode
        )
        output["ws"] = ws
        output["planes"] = planes
        return output


def build_discriminator(config: EG3DConfig) -> DualDiscriminator:
    """EG3D's dual discriminator: SR image + upsampled raw image, conditioned on the camera."""
    return DualDiscriminator(
        c_dim=config.c_dim,
        img_resolution=config.output_resolution,
        img_channels=3,
        channel_base=config.d_channel_base,
        channel_max=config.d_channel_max,
        mbstd_group_size=config.mbstd_group_size,
        disc_c_noise=config.disc_c_noise,
    )


__all__ = ["EG3DConfig", "PRESETS", "TriplaneGenerator", "build_discriminator", "preset"]
