"""Image and video discriminators on frame pairs (NeRFFaceShop §III-C1).

Both are EG3D dual discriminators (:class:`~headforge.nn.discriminator.DualDiscriminator`:
the super-resolved image with the upsampled raw image, blurred early in
training). The *image* discriminator judges each frame on its own, conditioned
on that frame's condition vector; the *video* discriminator judges the two
frames concatenated along channels (4 x 3 channels with the raw images),
conditioned on both frames' condition vectors, so it can tell whether the
change between two frames looks like a real video's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from headforge.nn.discriminator import DualDiscriminator

__all__ = ["PairDiscriminator", "stack_conditions"]


class PairDiscriminator(nn.Module):
    """D_image and D_video over frame pairs.

    Args:
        condition_dim: size of one frame's condition vector (NeRFFaceShop: 25 camera + 27 SH).
        img_resolution: image side (powers of two >= 8).
        img_channels: channels of one frame (3).
        **kwargs: for both :class:`DualDiscriminator` (``channel_base``,
            ``channel_max``, ``mbstd_group_size``, ``disc_c_noise``, ...).
    """

    def __init__(self, condition_dim: int, img_resolution: int, img_channels: int = 3, **kwargs) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        self.image = DualDiscriminator(condition_dim, img_resolution, img_channels, **kwargs)
        self.video = DualDiscriminator(2 * condition_dim, img_resolution, 2 * img_channels, **kwargs)

    def forward(
        self, frames: dict[str, Tensor], condition: Tensor, blur_sigma: float = 0.0, video: bool = True
    ) -> dict[str, Tensor]:
        """Logits of frame pairs.

        Args:
            frames: ``image`` (B, 2, C, H, W) and ``image_raw`` (B, 2, C, h, w).
            condition: (B, 2, condition_dim), one vector per frame.
            blur_sigma: discriminator-input blur in pixels (EG3D's schedule).
            video: run D_video too; without it only D_image judges (and only it gets gradients).

        Returns:
            ``image``: (B, 2) D_image logits per frame; ``video``: (B, 1) D_video logits
            (only with ``video``).
        """
        batch = condition.shape[0]
        if condition.shape[1:] != (2, self.condition_dim):
            raise ValueError(f"condition must be (B, 2, {self.condition_dim}), got {tuple(condition.shape)}")
        per_frame = {key: frames[key].flatten(0, 1) for key in ("image", "image_raw")}
        image_logits = self.image(per_frame, condition.flatten(0, 1), blur_sigma).reshape(batch, 2)
        if not video:
            return {"image": image_logits}
        # Channel-wise pairs: the dual discriminator then stacks [image U, image V, raw U, raw V].
        paired = {key: frames[key].flatten(1, 2) for key in ("image", "image_raw")}
        video_logits = self.video(paired, condition.flatten(1, 2), blur_sigma)
        return {"image": image_logits, "video": video_logits}


def stack_conditions(*parts: Tensor) -> Tensor:
    """Per-frame condition vectors (B, 2, sum D_i) from parts (B, 2, ...) flattened after the frame axis."""
    return torch.cat([part.flatten(2) for part in parts], dim=2)
