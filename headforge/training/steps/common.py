"""What every tri-plane GAN system's training plan starts from."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from headforge.training.phases import make_adam


@dataclass
class AdversarialNetworks:
    """G, its EMA copy and D, with EG3D's Adam optimisers (betas (0, 0.99), lazy-regularisation adjusted)."""

    networks: dict[str, nn.Module]
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer


def adversarial_networks(generator: nn.Module, discriminator: nn.Module, config) -> AdversarialNetworks:
    """Wrap a generator / discriminator pair as the trainer expects (``G``, ``G_ema``, ``D``).

    ``config`` supplies ``g_lr``, ``d_lr``, ``betas``, ``density_reg_interval``
    (G's lazy regulariser) and ``r1_interval`` (D's).
    """
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    return AdversarialNetworks(
        networks={"G": generator, "G_ema": generator_ema, "D": discriminator},
        g_optimizer=make_adam(
            generator.parameters(), config.g_lr, config.betas, interval=config.density_reg_interval
        ),
        d_optimizer=make_adam(
            discriminator.parameters(), config.d_lr, config.betas, interval=config.r1_interval
        ),
    )
