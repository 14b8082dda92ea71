"""Exponential moving average of generator weights (StyleGAN2-ADA semantics).

The EMA copy ``G_ema`` follows ``G`` with a half-life measured in images:
after every training step,

    ema_nimg = ema_kimg * 1000                                   (images)
    ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)              (when ema_rampup is set)
    beta     = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    p_ema    = beta * p_ema + (1 - beta) * p                     (floating-point parameters)
    b_ema    = b                                                 (buffers, copied)

so the EMA forgets half of its memory every ``ema_nimg`` images. The ramp-up
keeps the half-life short early in training (``beta = 0`` at ``cur_nimg = 0``,
i.e. the EMA starts as an exact copy).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage", "ema_beta", "update_ema"]


def ema_beta(
    batch_size: int, cur_nimg: int, ema_kimg: float = 10.0, ema_rampup: float | None = 0.05
) -> float:
    """EMA decay for one step of ``batch_size`` images taken when ``cur_nimg`` images were seen.

    Args:
        batch_size: global batch size of the step (images).
        cur_nimg: images shown to the discriminator before this step.
        ema_kimg: EMA half-life in thousands of images.
        ema_rampup: ramp-up ratio (half-life <= ``cur_nimg * ema_rampup``), or ``None`` for none.

    Returns:
        ``beta`` in ``[0, 1)``: the weight of the old EMA value.
    """
    ema_nimg = ema_kimg * 1000.0
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema_module: nn.Module, module: nn.Module, beta: float) -> None:
    """Blend ``module``'s parameters into ``ema_module`` and copy its buffers.

    ``p_ema <- p + beta * (p_ema - p)`` for floating-point parameters; integer
    parameters and all buffers are copied. Entries are matched by name, so both
    modules must have the same architecture.

    Raises:
        ValueError: when the two modules' parameter or buffer names differ.
    """
    ema_params = dict(ema_module.named_parameters())
    params = dict(module.named_parameters())
    ema_buffers = dict(ema_module.named_buffers())
    buffers = dict(module.named_buffers())
    if ema_params.keys() != params.keys() or ema_buffers.keys() != buffers.keys():
        missing = sorted((params.keys() | buffers.keys()) ^ (ema_params.keys() | ema_buffers.keys()))
        raise ValueError(f"EMA module does not match its source; differing entries: {missing[:8]}")
    for name, param in params.items():
        target = ema_params[name]
        if target.is_floating_point():
            target.copy_(param.detach().lerp(target, beta))
        else:
            target.copy_(param.detach())
    for name, buffer in buffers.items():
        ema_buffers[name].copy_(buffer)


class ExponentialMovingAverage:
    """Keeps ``ema_module`` an EMA of ``module`` with an image-count half-life.

    Example::

        ema = ExponentialMovingAverage(ema_kimg=10, ema_rampup=0.05)
        beta = ema.update(G_ema, G, batch_size=32, cur_nimg=cur_nimg)   # after each step

    The object is stateless (beta is a function of ``cur_nimg``), so nothing
    needs checkpointing besides ``G_ema`` itself.
    """

    def __init__(self, ema_kimg: float = 10.0, ema_rampup: float | None = 0.05) -> None:
        if ema_kimg < 0:
            raise ValueError(f"ema_kimg must be >= 0, got {ema_kimg}")
        self.ema_kimg = ema_kimg
        self.ema_rampup = ema_rampup

    def beta(self, batch_size: int, cur_nimg: int) -> float:
        """Decay for one step; see :func:`ema_beta`."""
        return ema_beta(batch_size, cur_nimg, self.ema_kimg, self.ema_rampup)

    def update(self, ema_module: nn.Module, module: nn.Module, batch_size: int, cur_nimg: int) -> float:
        """Apply one EMA step and return the ``beta`` used."""
        beta = self.beta(batch_size, cur_nimg)
        update_ema(ema_module, module, beta)
        return beta
