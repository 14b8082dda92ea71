"""NeRFFaceShop: an animatable and relightable tri-plane GAN learned from in-the-wild videos.

Jiang et al., "NeRFFaceShop" (the paper's §III). The backbone is NeRFFaceLighting
[27] with its convolutional features *rolled out* (§III-A/B, RODIN [60]): nine
synthesis blocks B4 ... B256, B_S(1), B_S(2) paint three pixel-aligned planes.

* Identity: z -> omega by the mapping network; B4 ... B_R are conditioned on it.
* Animation (§III-B): 1x1 convolutions on B4 ... B32 give the shape field
  delta_shape (template -> instance, omega only); G_motion maps m ~ N(0, I)
  to the template-space expression field delta_exp (m only). F^32 and the
  skip tri-planes at 32x32 are warped by delta_shape o delta_exp o delta_shape^-1
  (the inverse by fixed-point iteration, ``headforge.nn.warp.conjugate``;
  delta_shape's steepness is capped so that the inverse exists).
* Lighting (§III-A): B64 ... B_R give the albedo tri-planes; B_S(1), B_S(2),
  styled by omega and the lighting code l (from the 27 SH coefficients), give
  the shading tri-planes; an albedo decoder (density + albedo) and a shading
  decoder (scalar shading) make the field, emitted colour = albedo x shading.
* Volume rendering and super-resolution are EG3D's.
* Face mask M (§III-C3): a template-space mask on delta_exp, applied after
  training (``use_expression_mask``; derived in ``nerffaceshop_mask``).

The stages are separate methods so that controls reuse work: a camera change
re-renders cached planes, a light change re-runs B_S(1), B_S(2) and rendering,
an animation change re-runs everything from B32 on
(``headforge.models.nerffaceshop_controls``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headforge.lighting import directional_light_sh
from headforge.models.nerffaceshop_config import PRESETS, NeRFFaceShopConfig, preset
from headforge.nn.lit_triplane import LitTriplaneField, ShadingDecoder
from headforge.nn.pair_discriminator import PairDiscriminator
from headforge.nn.rollout import (
    RolloutSynthesisBlock,
    RolloutSynthesisNetwork,
    RolloutToPlanes,
    split_block_ws,
    upsample_planes,
)
from headforge.nn.stylegan2 import MappingNetwork
from headforge.nn.superres import SuperResolution
from headforge.nn.triplane import TriplaneDecoder
from headforge.nn.warp import conjugate, limit_lipschitz, mask_displacement, warp_planes
from headforge.render.field_images import render_field_images
from headforge.render.renderer import VolumeRenderer


@dataclass
class WarpFeatures:
    """The generator's state at the warp resolution R_w (32 in the paper).

    features: (B, 3, C, R_w, R_w) rolled-out convolutional features F^32.
    planes: (B, 3, C_p, R_w, R_w) skip tri-planes accumulated up to B32.
    shape_field: (B, 3, 2, R_w, R_w) delta_shape per plane (template -> instance).
    fused_field: (B, 3, 2, R_w, R_w) the field that warped ``features`` (None before ``animate``).
    """

    features: Tensor
    planes: Tensor
    shape_field: Tensor
    fused_field: Tensor | None = None


@dataclass
class AlbedoPlanes:
    """Output of B64 ... B_R.

    features: (B, 3, C_R, R, R) the last block's features (B_S(1)'s input).
    planes: (B, 3, C_p, R, R) albedo tri-planes.
    """

    features: Tensor
    planes: Tensor


def _split_raw(features: Tensor) -> tuple[Tensor, Tensor]:
    """Composited (B, F, h, w) features in [0, 1] -> (raw RGB in [-1, 1], features with that RGB first)."""
    rgb = features[:, :3] * 2 - 1
    return rgb, torch.cat([rgb, features[:, 3:]], dim=1)


class NeRFFaceShopGenerator(nn.Module):
    """z, conditioning camera, animation m, SH lighting, camera -> lit image, albedo, shading, depth."""

    def __init__(self, config: NeRFFaceShopConfig) -> None:
        super().__init__()
        self.config = cfg = config
        layout, res, planes, w_dim = (
            cfg.plane_layout,
            cfg.triplane_resolution,
            cfg.triplane_channels,
            cfg.w_dim,
        )
        self.backbone = RolloutSynthesisNetwork(w_dim, res, planes, cfg.channel_base, cfg.channel_max, layout)
        resolutions = self.backbone.block_resolutions
        if cfg.warp_resolution not in resolutions:
            raise ValueError(f"warp_resolution {cfg.warp_resolution} is not a block resolution {resolutions}")
        self.num_geometry_blocks = resolutions.index(cfg.warp_resolution) + 1
        self.num_ws = self.backbone.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, w_dim, self.num_ws, cfg.mapping_layers)
        # delta_shape: a 1x1 convolution on each of B4 ... B32, summed through the skip path.
        self.shape_heads = nn.ModuleList(
            RolloutToPlanes(self.backbone.channels_at(r), 2, w_dim, cfg.deformation_init_scale)
            for r in resolutions[: self.num_geometry_blocks]
        )
        # G_motion: a rolled-out StyleGAN2 generator m -> delta_exp, noise-free (a function of m alone).
        motion = (cfg.motion_w_dim, cfg.warp_resolution, 2, cfg.motion_channel_base, cfg.motion_channel_max)
        self.motion_synthesis = RolloutSynthesisNetwork(
            *motion, layout, torgb_init_scale=cfg.deformation_init_scale, use_noise=False
        )
        num_motion_ws = self.motion_synthesis.num_ws
        self.motion_mapping = MappingNetwork(
            cfg.motion_dim, 0, cfg.motion_w_dim, num_motion_ws, cfg.mapping_layers
        )
        # B_S(1), B_S(2): no upsampling, styled by [omega, l].
        top = self.backbone.channels_at(res)
        self.shading_blocks = nn.ModuleList(
            RolloutSynthesisBlock(top, top, w_dim + cfg.lighting_w_dim, res, planes, up=1, layout=layout)
            for _ in range(cfg.num_shading_blocks)
        )
        self.num_lighting_ws = sum(block.num_conv for block in self.shading_blocks) + 1
        lighting = (0, cfg.sh_dim, cfg.lighting_w_dim, self.num_lighting_ws, cfg.mapping_layers)
        self.lighting_mapping = MappingNetwork(*lighting)
        lr = cfg.decoder_lr_multiplier
        self.albedo_decoder = TriplaneDecoder(planes, cfg.decoder_hidden, cfg.feature_channels, lr)
        self.shading_decoder = ShadingDecoder(planes, cfg.shading_hidden, lr)
        sr = (cfg.sr_input_resolution, cfg.output_resolution, w_dim, cfg.sr_channel_base, cfg.sr_channel_max)
        self.superresolution = SuperResolution(cfg.feature_channels, 3, *sr)
        self.renderer = VolumeRenderer(cfg.rendering_options(perturb=True))
        self.eval_renderer = VolumeRenderer(cfg.rendering_options(perturb=False))
        self.register_buffer("expression_mask", torch.ones(1, 3, 1, cfg.warp_resolution, cfg.warp_resolution))
        # Multiplies delta_exp: 1 except while training warms up without animation
        # (``animation_warmup_kimg``); saved, so a model exported then renders as it trained.
        self.register_buffer("expression_gain", torch.ones(()))
        # Running mean of the training lights (as StyleGAN's w_avg): the default light of the apps.
        default_light = directional_light_sh(torch.tensor([0.0, 0.0, 1.0]), color=0.5, ambient=0.5)
        self.register_buffer("sh_avg", default_light.reshape(cfg.sh_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the expression gain existed animate fully.
        state_dict.setdefault(prefix + "expression_gain", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ latent spaces
    def encode_identity(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> Tensor:
        """Identity latent z (B, z_dim) and conditioning camera (B, 25) -> omega as ws (B, num_ws, w_dim)."""
        return self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )

    def encode_motion(self, m: Tensor, update_emas: bool = False) -> Tensor:
        """Animation latent m (B, motion_dim) ~ N(0, I) -> G_motion's ws (B, n, motion_w_dim)."""
        return self.motion_mapping(m, None, update_emas=update_emas)

    def encode_lighting(self, sh: Tensor, update_emas: bool = False) -> Tensor:
        """SH (B, 9, 3) or (B, 27) -> lighting latent l as ws (B, num_lighting_ws, lighting_w_dim).

        ``update_emas`` (training) also moves ``sh_avg`` towards the batch's mean light.
        """
        sh = sh.reshape(sh.shape[0], self.config.sh_dim)
        if update_emas:
            with torch.no_grad():
                self.sh_avg.copy_(sh.detach().mean(dim=0).lerp(self.sh_avg, 0.998))
        return self.lighting_mapping(None, sh, update_emas=update_emas)

    # ------------------------------------------------------------------ synthesis stages
    def synthesize_to_32(self, ws: Tensor, noise_mode: str = "random") -> WarpFeatures:
        """B4 ... B32 (up to ``warp_resolution``): features, skip tri-planes and delta_shape."""
        block_ws = self.backbone.split_ws(ws)
        x = planes = shape_field = None
        for block, head, w in zip(self.backbone.blocks, self.shape_heads, block_ws):
            x, planes = block(x, planes, w, noise_mode=noise_mode)
            # The 1x1 head shares the block's ToRGB style; normalised units need no rescaling when upsampled.
            head_out = head(x, w[:, -1])
            shape_field = (
                head_out
                if shape_field is None
                else upsample_planes(shape_field, block.resample_filter) + head_out
            )
        if self.config.shape_lipschitz_max is not None:  # keep x + delta_shape(x) invertible
            shape_field = limit_lipschitz(
                shape_field.flatten(0, 1), self.config.shape_lipschitz_max
            ).unflatten(0, shape_field.shape[:2])
        return WarpFeatures(x, planes, shape_field)

    def expression_field(self, motion_ws: Tensor, masked: bool | None = None) -> Tensor:
        """G_motion: motion ws -> template-space delta_exp (B, 3, 2, R_w, R_w), normalised units.

        Multiplied by the face mask M when ``masked`` (default: ``config.use_expression_mask``).
        """
        field = self.motion_synthesis(motion_ws, noise_mode="none") * self.expression_gain
        if self.config.warp_frontal_only:  # the released code animates the XY (frontal) plane only
            field = torch.cat([field[:, :1], torch.zeros_like(field[:, 1:])], dim=1)
        if self.config.use_expression_mask if masked is None else masked:
            batch, planes = field.shape[:2]
            mask = self.expression_mask.expand(batch, -1, -1, -1, -1).flatten(0, 1)
            field = mask_displacement(field.flatten(0, 1), mask).unflatten(0, (batch, planes))
        return field

    def fused_field(self, shape_field: Tensor, expression_field: Tensor) -> Tensor:
        """delta_shape o delta_exp o delta_shape^-1 per plane, (B, 3, 2, R_w, R_w) (batch 1 broadcasts)."""
        batch = max(shape_field.shape[0], expression_field.shape[0])
        shape_field = shape_field.expand(batch, -1, -1, -1, -1)
        expression_field = expression_field.expand(batch, -1, -1, -1, -1)
        fused = conjugate(
            shape_field.flatten(0, 1),
            expression_field.flatten(0, 1),
            self.config.warp_iterations,
            self.config.warp_backprop_steps,
        )
        return fused.unflatten(0, (batch, 3))

    def animate(self, base: WarpFeatures, expression_field: Tensor) -> WarpFeatures:
        """Warp F^32 and the 32x32 skip tri-planes by the fused field (§III-B, Fig. 3)."""
        fused = self.fused_field(base.shape_field, expression_field)
        return WarpFeatures(
            warp_planes(base.features.expand(fused.shape[0], -1, -1, -1, -1), fused),
            warp_planes(base.planes.expand(fused.shape[0], -1, -1, -1, -1), fused),
            base.shape_field,
            fused,
        )

    def synthesize_albedo_planes(
        self, ws: Tensor, animated: WarpFeatures, noise_mode: str = "random"
    ) -> AlbedoPlanes:
        """B64 ... B_R on the warped features: albedo tri-planes (B, 3, C_p, R, R)."""
        x, planes = animated.features, animated.planes
        blocks = self.backbone.blocks
        block_ws = self.backbone.split_ws(ws)
        for block, w in zip(blocks[self.num_geometry_blocks :], block_ws[self.num_geometry_blocks :]):
            x, planes = block(x, planes, w, noise_mode=noise_mode)
        return AlbedoPlanes(x, planes)

    def synthesize_shading_planes(
        self, ws: Tensor, albedo: AlbedoPlanes, lighting_ws: Tensor, noise_mode: str = "random"
    ) -> Tensor:
        """B_S(1), B_S(2), styled by [omega, l], on B_R's features: shading tri-planes (B, 3, C_p, R, R).

        As the paper says, they read the albedo blocks' features, not the albedo tri-planes.
        """
        omega = ws[:, -1:].expand(-1, lighting_ws.shape[1], -1)
        styles = torch.cat([omega, lighting_ws.expand(ws.shape[0], -1, -1)], dim=2)
        x, planes = albedo.features, None
        for block, w in zip(self.shading_blocks, split_block_ws(styles, self.shading_blocks)):
            x, planes = block(x, planes, w, noise_mode=noise_mode)
        return planes

    # ------------------------------------------------------------------ rendering
    def field(self, albedo_planes: Tensor, shading_planes: Tensor | None = None) -> LitTriplaneField:
        """The radiance field of albedo (B, 3, C_p, R, R) and shading tri-planes, in the renderer's protocol.

        A (B, 2, 3, C_p, R, R) stack from :meth:`synthesize_planes` may be passed alone.
        """
        cfg = self.config
        if albedo_planes.ndim == 6:
            albedo_planes, shading_planes = albedo_planes[:, 0], albedo_planes[:, 1]
        return LitTriplaneField(
            albedo_planes,
            shading_planes,
            self.albedo_decoder,
            self.shading_decoder,
            cfg.plane_layout,
            cfg.box_warp,
        )

    def sample_density(self, albedo_planes: Tensor, points: Tensor) -> Tensor:
        """Raw density (B, N, 1) at world points (B, N, 3): from the albedo tri-planes only."""
        return self.field(albedo_planes)(points, torch.zeros_like(points))["sigma"]

    def render(
        self,
        albedo_planes: Tensor,
        shading_planes: Tensor | None,
        ws: Tensor,
        camera: Tensor,
        neural_rendering_resolution: int | None = None,
        perturb: bool | None = None,
        noise_mode: str = "random",
        superresolve: tuple[str, ...] = ("image", "albedo"),
    ) -> dict[str, Tensor]:
        """Volume-render from cameras (B, 25) and super-resolve the passes named in ``superresolve``.

        Returns ``image_raw`` (lit, [-1, 1], B, 3, h, w), ``features`` (the SR
        input), ``albedo_raw``, ``shading`` (B, 1, h, w), ``image_depth`` and
        ``opacity``, plus ``image`` / ``albedo`` (B, 3, H, W) when super-resolved.
        Without shading planes only the albedo is rendered and the "image" is
        the albedo. Density never depends on the light, so the albedo outputs
        are bit-identical under any lighting.
        """
        resolution = neural_rendering_resolution or self.config.neural_rendering_resolution
        perturb = self.training if perturb is None else perturb
        renderer = self.renderer if perturb else self.eval_renderer
        maps = render_field_images(renderer, self.field(albedo_planes, shading_planes), camera, resolution)
        out = {"image_depth": maps["depth"], "opacity": maps["opacity"]}
        out["albedo_raw"], albedo_features = _split_raw(maps.get("albedo", maps["features"]))
        if shading_planes is None:
            out.update(image_raw=out["albedo_raw"], features=albedo_features)
        else:
            out["image_raw"], out["features"] = _split_raw(maps["features"])
            out["shading"] = maps["shading"]
        passes = {
            "image": (out["image_raw"], out["features"]),
            "albedo": (out["albedo_raw"], albedo_features),
        }
        for name in superresolve:
            source = "albedo" if shading_planes is None else name  # unlit: the image is the albedo
            if source not in out:
                rgb, features = passes[source]
                out[source] = self.superresolution(
                    rgb, features, ws, noise_mode=self.config.superresolution_noise(noise_mode)
                )
            out[name] = out[source]
        return out

    # ------------------------------------------------------------------ whole pass and controls
    def forward(
        self,
        z: Tensor,
        c: Tensor,
        m: Tensor,
        sh: Tensor,
        camera: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        neural_rendering_resolution: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
        perturb: bool | None = None,
    ) -> dict[str, Tensor]:
        """The whole pass: ``render``'s outputs plus every stage's result.

        Args: z (B, z_dim), conditioning c (B, 25), m (B, motion_dim), sh
        (B, 9, 3) or (B, 27), rendering camera (B, 25; default c).
        Adds ``ws``, ``planes`` (albedo), ``shading_planes``, ``shape_field``,
        ``expression_field`` and ``fused_field`` to the output.
        """
        ws = self.encode_identity(z, c, truncation_psi, truncation_cutoff, update_emas)
        base = self.synthesize_to_32(ws, noise_mode)
        expression = self.expression_field(self.encode_motion(m, update_emas))
        animated = self.animate(base, expression)
        albedo = self.synthesize_albedo_planes(ws, animated, noise_mode)
        shading = self.synthesize_shading_planes(
            ws, albedo, self.encode_lighting(sh, update_emas), noise_mode
        )
        out = self.render(
            albedo.planes,
            shading,
            ws,
            c if camera is None else camera,
            neural_rendering_resolution,
            perturb,
            noise_mode,
        )
        out.update(
            ws=ws,
            planes=albedo.planes,
            shading_planes=shading,
            shape_field=base.shape_field,
            expression_field=expression,
            fused_field=animated.fused_field,
        )
        return out

    # ------------------------------------------------------------------ EG3D-style view (for the apps)
    def map(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> Tensor:
        """EG3D's name for :meth:`encode_identity`."""
        return self.encode_identity(z, c, truncation_psi, truncation_cutoff, update_emas)

    def synthesize_planes(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        """Stacked [albedo, shading] tri-planes (B, 2, 3, C_p, R, R): neutral head, average light.

        Neutral: m = 0, the mode of N(0, I); light: ``sh_avg``, the running
        mean of the training lights. EG3D-style apps (generate, video, mesh)
        pass the stack to :meth:`render_planes` and :meth:`field`.
        """
        batch = ws.shape[0]
        expression = self.expression_field(self.encode_motion(ws.new_zeros(batch, self.config.motion_dim)))
        animated = self.animate(self.synthesize_to_32(ws, noise_mode), expression)
        albedo = self.synthesize_albedo_planes(ws, animated, noise_mode)
        lighting = self.encode_lighting(self.sh_avg.expand(batch, -1))
        return torch.stack(
            [albedo.planes, self.synthesize_shading_planes(ws, albedo, lighting, noise_mode)], 1
        )

    def render_planes(
        self,
        planes: Tensor,
        ws: Tensor,
        camera: Tensor,
        neural_rendering_resolution: int | None = None,
        perturb: bool | None = None,
        noise_mode: str = "random",
    ) -> dict[str, Tensor]:
        """:meth:`render` of a :meth:`synthesize_planes` stack."""
        return self.render(
            planes[:, 0], planes[:, 1], ws, camera, neural_rendering_resolution, perturb, noise_mode
        )


def build_discriminator(config: NeRFFaceShopConfig) -> PairDiscriminator:
    """D_image and D_video (§III-C1), conditioned per frame on [camera (25), SH (27)]."""
    return PairDiscriminator(
        condition_dim=config.c_dim + config.sh_dim,
        img_resolution=config.output_resolution,
        channel_base=config.d_channel_base,
        channel_max=config.d_channel_max,
        mbstd_group_size=config.mbstd_group_size,
        disc_c_noise=config.disc_c_noise,
    )


__all__ = [
    "AlbedoPlanes",
    "NeRFFaceShopConfig",
    "NeRFFaceShopGenerator",
    "PRESETS",
    "WarpFeatures",
    "build_discriminator",
    "preset",
]
