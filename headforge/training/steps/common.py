"""What every tri-plane GAN system's training plan starts from."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from headforge.training.augment import AdaptiveAugment
from headforge.training.phases import StepInfo, make_adam


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
    networks = {"G": generator, "G_ema": generator_ema, "D": discriminator}
    augment = augment_pipeline(config)
    if augment is not None:
        networks["augment"] = augment
    return AdversarialNetworks(
        networks=networks,
        g_optimizer=make_adam(
            generator.parameters(), config.g_lr, config.betas, interval=config.density_reg_interval
        ),
        d_optimizer=make_adam(
            discriminator.parameters(), config.d_lr, config.betas, interval=config.r1_interval
        ),
    )


def augment_pipeline(config) -> AdaptiveAugment | None:
    """The discriminator augmentation ``config.augment`` asks for ("none" -> None).

    ``config`` supplies ``augment``, ``augment_p``, ``ada_target``,
    ``ada_kimg`` and ``ada_interval`` (see ``EG3DConfig``).
    """
    if config.augment == "none":
        return None
    return AdaptiveAugment(
        p=config.augment_p,
        target=config.ada_target if config.augment == "ada" else None,
        speed_kimg=config.ada_kimg,
        interval=config.ada_interval,
    )


def adapt_augmentation(info: StepInfo) -> None:
    """``on_step_end`` hook: every ``interval`` steps, move the augmentation probability (ADA).

    The images shown since the last adjustment (all ranks) set the step size.
    """
    augment = info.networks.get("augment")
    if isinstance(augment, AdaptiveAugment) and info.steps_done % augment.interval == 0:
        augment.adjust(augment.interval * info.trainer.batch_size)  # the trainer's batch is global
