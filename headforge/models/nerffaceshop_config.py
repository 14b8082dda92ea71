"""NeRFFaceShop's settings: EG3D's plus the animation, lighting and video-training ones, and presets.

Defaults are the paper's (§III, §V-A) where it gives them and otherwise the
released code's (RaymondJiangkw/NeRFFaceShop) or NeRFFaceLighting's [27].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from headforge.models.eg3d import EG3DConfig

__all__ = ["NeRFFaceShopConfig", "PRESETS", "preset"]


@dataclass
class NeRFFaceShopConfig(EG3DConfig):
    """Architecture and training defaults of one NeRFFaceShop preset.

    Inherited EG3D fields keep their meaning (``channel_base`` / ``channel_max``
    now size the rolled-out backbone, per plane). New fields:

    Animation (§III-B): ``motion_dim`` (m, 128), ``motion_w_dim`` and
    ``motion_channel_*`` (G_motion), ``warp_resolution`` (32: where F is
    warped), ``warp_iterations`` (fixed-point steps of the inverse),
    ``warp_backprop_steps`` (how many of those steps gradients pass through:
    1 keeps the gradient bounded when delta_shape folds, None unrolls all;
    see ``headforge.nn.warp.conjugate``), ``shape_lipschitz_max`` (0.9:
    delta_shape is scaled down whenever its Lipschitz bound exceeds it, so
    that ``x + delta_shape(x)`` stays invertible and delta_shape^-1 exists,
    as the paper's conjugation assumes; None lets it fold),
    ``warp_frontal_only`` (the released code animates the XY plane only),
    ``deformation_init_scale`` (initial weight scale of the deformation
    heads: fields start near zero), ``use_expression_mask`` (multiply
    delta_exp by the template-space face mask M; off while training, §III-C3).

    Lighting (§III-A): ``sh_dim`` (27 = 9 x 3), ``lighting_w_dim`` (l, 512),
    ``num_shading_blocks`` (B_S(1), B_S(2)), ``shading_hidden``.

    Training (§III-C): ``video_weight`` (D_video's loss next to D_image's),
    ``minimal_alpha`` / ``minimal_beta`` (1, 0.1), ``minimal_smoothness`` (0:
    the paper's equation; the released code adds each field's roughness with
    weight 1, see ``headforge.nn.warp.minimal_deformation_loss``),
    ``animation_warmup_kimg`` / ``animation_ramp_kimg`` (0, 0: animated from
    the start; otherwise delta_exp is scaled by 0 until the first, then
    faded in linearly over the second: the paper fine-tunes a trained static
    rolled-out EG3D, which a run from scratch imitates by learning the static
    heads first; D_video sits out the warm-up, as it is absent from the
    paper's static stage), ``lighting_reg`` (25) and
    ``lighting_reg_sh_jitter`` (0.1 x the SH std), ``pair_sampling``
    ("adaptive" or the "uniform" ablation) and ``pair_tau`` (1.3).
    """

    channel_base: int = 16384
    channel_max: int = 256
    # Animation.
    motion_dim: int = 128
    motion_w_dim: int = 128
    motion_channel_base: int = 4096
    motion_channel_max: int = 128
    warp_resolution: int = 32
    warp_iterations: int = 20
    warp_backprop_steps: int | None = 1
    shape_lipschitz_max: float | None = 0.9
    warp_frontal_only: bool = False
    deformation_init_scale: float = 1e-4
    use_expression_mask: bool = False
    # Lighting.
    sh_dim: int = 27
    lighting_w_dim: int = 512
    num_shading_blocks: int = 2
    shading_hidden: int = 64
    # Training.
    batch_size: int = 16
    video_weight: float = 1.0
    minimal_alpha: float = 1.0
    minimal_beta: float = 0.1
    minimal_smoothness: float = 0.0
    animation_warmup_kimg: float = 0.0
    animation_ramp_kimg: float = 0.0
    lighting_reg: float = 25.0
    lighting_reg_sh_jitter: float = 0.1
    pair_sampling: str = "adaptive"
    pair_tau: float = 1.3

    def expression_gain(self, kimg: float) -> float:
        """delta_exp's multiplier after ``kimg`` thousand training pairs: 0, a linear ramp, then 1."""
        if kimg < self.animation_warmup_kimg:
            return 0.0
        if self.animation_ramp_kimg <= 0:
            return 1.0
        return min(1.0, (kimg - self.animation_warmup_kimg) / self.animation_ramp_kimg)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.animation_warmup_kimg < 0 or self.animation_ramp_kimg < 0:
            raise ValueError("animation_warmup_kimg and animation_ramp_kimg must be >= 0")
        if self.pair_sampling not in ("adaptive", "uniform"):
            raise ValueError(f"pair_sampling must be 'adaptive' or 'uniform', got {self.pair_sampling!r}")


PRESETS: dict[str, NeRFFaceShopConfig] = {
    # Seconds per step on a 2-core CPU: tests and smoke runs.
    "tiny": NeRFFaceShopConfig(
        z_dim=32,
        w_dim=32,
        triplane_resolution=32,
        triplane_channels=8,
        channel_base=256,
        channel_max=16,
        motion_dim=16,
        motion_w_dim=16,
        motion_channel_base=128,
        motion_channel_max=8,
        warp_resolution=16,
        lighting_w_dim=16,
        shading_hidden=16,
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
        batch_size=2,
        ema_kimg=0.01,
        truncation_cutoff=None,
    ),
    # The shipped demo model, sized to be trained on a 2-core CPU over a few sessions
    # (4.0 s per step at batch 8 there): 64 px output from 32 px neural rendering,
    # 64^2 tri-planes, 16 + 16 samples per ray, 2.0 M generator parameters. The
    # D-input blur fades over 8 kimg instead of 200: the whole run is tens of kimg.
    # The studio has 96 identities, few enough for the discriminators to learn
    # them by heart, so D's inputs are augmented adaptively (StyleGAN2-ADA), with
    # p free to cross [0, 1] in 20 kimg rather than 500 for the same reason.
    # R1 gamma 0.3 rather than EG3D's 1 (sized for 512 px): StyleGAN2-ADA's
    # heuristic 0.0002 * res^2 / batch gives 0.1 at 64 px and batch 8, and
    # EG3D's 128 px ShapeNet runs use 0.3.
    # The expression field is held back harder than in the paper (beta 1, not
    # 0.1, plus the released code's roughness term): NeRFFaceShop starts from a
    # trained rolled-out EG3D, while this preset learns the heads and their
    # animation together from scratch, and with beta 0.1 G_motion's fields
    # grew to displace the 32 px features by 0.5 (a quarter of the plane) on
    # average, scrambling them before faces could form. For the same reason the
    # first 80 kimg learn static heads (delta_exp scaled by 0, D_video idle),
    # and animation fades in over the next 10: the paper's recipe of animating
    # a trained static backbone, in one run.
    # Learning rates 0.00125 / 0.001 (G / D), EG3D's 0.0025 / 0.002 scaled by
    # sqrt(8 / 32) for a batch of 8 instead of 32: at EG3D's rates G's weights
    # wandered so far around their running average that G_ema's heads stayed
    # blurred and unchanged from 61 to 70 kimg, while G's own images differed
    # from G_ema's in colour and brightness at every checkpoint looked at.
    "small": NeRFFaceShopConfig(
        z_dim=256,
        w_dim=256,
        triplane_resolution=64,
        triplane_channels=16,
        channel_base=1536,
        channel_max=64,
        motion_dim=128,
        motion_w_dim=128,
        motion_channel_base=512,
        motion_channel_max=32,
        lighting_w_dim=64,
        shading_hidden=32,
        decoder_hidden=32,
        feature_channels=16,
        neural_rendering_resolution=32,
        neural_rendering_resolution_final=None,
        num_coarse=16,
        num_fine=16,
        output_resolution=64,
        sr_channel_base=1024,
        sr_channel_max=32,
        d_channel_base=2048,
        d_channel_max=64,
        batch_size=8,
        blur_fade_kimg=8.0,
        ema_kimg=2.0,
        augment="ada",
        ada_kimg=20.0,
        r1_gamma=0.3,
        minimal_beta=1.0,
        minimal_smoothness=1.0,
        animation_warmup_kimg=80.0,
        animation_ramp_kimg=10.0,
        g_lr=0.00125,
        d_lr=0.001,
    ),
    # The paper's settings: 512 px from 64 -> 128 px neural rendering, batch 16.
    "paper": NeRFFaceShopConfig(),
}


def preset(name: str, **overrides: Any) -> NeRFFaceShopConfig:
    """A copy of a named preset with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown NeRFFaceShop preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
