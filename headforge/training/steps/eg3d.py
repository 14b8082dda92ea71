"""EG3D's training objective as trainer phases.

* ``Gmain``: non-saturating loss on the dual discriminator's logits for images
  rendered from cameras drawn from the dataset, with the generator's
  conditioning label swapped with probability fading from 1 to 0.5 (GPC).
* ``Greg`` (every 4 steps): the density smoothness regulariser, weight 0.25,
  jitter 0.004.
* ``Dmain``: logistic loss on fakes and reals; the real image's raw companion
  is the real image resized to the current neural rendering resolution.
* ``Dreg`` (every 16 steps): R1 on the real image and its raw companion,
  gamma / 2.

Discriminator inputs are blurred with a sigma fading from 10 to 0 over the
first 200 kimg; the neural rendering resolution follows EG3D's schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from headforge.models.eg3d import PRESETS, EG3DConfig, TriplaneGenerator, build_discriminator
from headforge.models.registry import ModelSpec, TrainingPlan
from headforge.nn.filters import filtered_resize
from headforge.training.losses import (
    density_regularizer,
    discriminator_fake_loss,
    discriminator_real_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    swap_conditioning,
)
from headforge.training.phases import Phase, PhaseContext
from headforge.training.schedules import (
    blur_sigma,
    conditioning_swap_probability,
    neural_rendering_resolution,
)
from headforge.training.steps.common import adapt_augmentation, adversarial_networks


class EG3DObjective:
    """The loss functions of EG3D's four phases for one generator / discriminator pair.

    ``camera_pool`` (N, 25) holds the dataset's camera labels: fake images are
    rendered from cameras drawn from it, as EG3D draws ``gen_c`` from the data.
    """

    def __init__(self, config: EG3DConfig, camera_pool: Tensor) -> None:
        self.config = config
        self.camera_pool = camera_pool

    # ------------------------------------------------------------------ schedules
    def rendering_resolution(self, cur_nimg: int) -> int:
        config = self.config
        return neural_rendering_resolution(
            cur_nimg,
            config.neural_rendering_resolution,
            config.neural_rendering_resolution_final,
            config.neural_rendering_resolution_fade_kimg,
        )

    def blur(self, cur_nimg: int) -> float:
        return blur_sigma(cur_nimg, self.config.blur_init_sigma, self.config.blur_fade_kimg)

    # ------------------------------------------------------------------ shared pieces
    def sample_fake_inputs(self, ctx: PhaseContext) -> tuple[Tensor, Tensor, Tensor]:
        """Latents (b, z_dim), rendering cameras (b, 25) and (possibly swapped) conditioning labels."""
        pool = self.camera_pool
        picks = torch.randint(pool.shape[0], (ctx.batch_size,), generator=ctx.generator, device=ctx.device)
        camera = pool.to(ctx.device)[picks]
        probability = conditioning_swap_probability(ctx.cur_nimg, self.config.pose_swap_probability)
        conditioning = (
            camera if probability is None else swap_conditioning(camera, probability, ctx.generator)
        )
        return ctx.randn(ctx.batch_size, self.config.z_dim), camera, conditioning

    def generate(self, ctx: PhaseContext, update_emas: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        z, camera, conditioning = self.sample_fake_inputs(ctx)
        output = ctx.networks["G"](
            z,
            conditioning,
            camera=camera,
            neural_rendering_resolution=self.rendering_resolution(ctx.cur_nimg),
            update_emas=update_emas,
        )
        return output, camera

    def discriminate(
        self,
        ctx: PhaseContext,
        images: dict[str, Tensor],
        conditioning: Tensor,
        real: bool = False,
        **options: Any,
    ) -> Any:
        """D's logits for ``images`` after the run's augmentation (``ctx.networks["augment"]``, if any).

        Every image D sees goes through the same pipeline (StyleGAN2-ADA):
        fakes in Gmain and Dmain, reals in Dmain and R1. With ``real`` the
        logits feed the augmentation's overfitting estimate r_t. ``options``
        go to D's forward.
        """
        augment = ctx.networks.get("augment")
        if augment is not None:
            images = augment(images, ctx.generator)
        logits = ctx.networks["D"](images, conditioning, self.blur(ctx.cur_nimg), **options)
        if real and augment is not None:
            augment.accumulate(torch.cat([value.flatten() for value in _logit_tensors(logits)]))
        return logits

    @staticmethod
    def augment_probability(ctx: PhaseContext) -> dict[str, Tensor]:
        """``{"augment_p": p}`` to log when the run augments, else nothing."""
        augment = ctx.networks.get("augment")
        return {} if augment is None else {"augment_p": augment.p.detach().clone()}

    def real_images(self, ctx: PhaseContext) -> dict[str, Tensor]:
        image = ctx.batch["image"]
        return {"image": image, "image_raw": filtered_resize(image, self.rendering_resolution(ctx.cur_nimg))}

    # ------------------------------------------------------------------ phases
    def generator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        fake, camera = self.generate(ctx)
        logits = self.discriminate(ctx, {"image": fake["image"], "image_raw": fake["image_raw"]}, camera)
        return {"loss": nonsaturating_generator_loss(logits).mean(), "score_fake": logits.mean()}

    def generator_density(self, ctx: PhaseContext) -> dict[str, Tensor]:
        z, _, conditioning = self.sample_fake_inputs(ctx)
        generator: TriplaneGenerator = ctx.networks["G"]
        planes = generator.synthesize_planes(generator.map(z, conditioning))
        smoothness = density_regularizer(
            lambda points: generator.sample_density(planes, points),
            ctx.batch_size,
            jitter=self.config.density_reg_jitter,
            box=self.config.box_warp / 2,
            generator=ctx.generator,
            device=ctx.device,
        )
        return {"loss": smoothness * self.config.density_reg * ctx.gain, "density_tv": smoothness}

    def discriminator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        with torch.no_grad():
            fake, camera = self.generate(ctx, update_emas=True)
        fake_logits = self.discriminate(ctx, {"image": fake["image"], "image_raw": fake["image_raw"]}, camera)
        real_logits = self.discriminate(ctx, self.real_images(ctx), ctx.batch["camera"], real=True)
        loss = discriminator_fake_loss(fake_logits).mean() + discriminator_real_loss(real_logits).mean()
        return {
            "loss": loss,
            "score_fake": fake_logits.mean(),
            "score_real": real_logits.mean(),
            # StyleGAN2-ADA's overfitting heuristic r_t = E[sign(D(real))]: near 1, D has memorised the reals.
            "sign_real": real_logits.sign().mean(),
            **self.augment_probability(ctx),
        }

    def discriminator_r1(self, ctx: PhaseContext) -> dict[str, Tensor]:
        real = {key: value.detach().requires_grad_(True) for key, value in self.real_images(ctx).items()}
        logits = self.discriminate(ctx, real, ctx.batch["camera"])
        penalty = r1_penalty(logits, [real["image"], real["image_raw"]])
        return {
            "loss": (penalty * (self.config.r1_gamma / 2)).mean() * ctx.gain,
            "r1_penalty": penalty.mean(),
        }


def _logit_tensors(logits: Tensor | dict[str, Tensor]) -> list[Tensor]:
    """A discriminator's logits as a list (EG3D's D returns one tensor, NeRFFaceShop's a dict of them)."""
    return list(logits.values()) if isinstance(logits, dict) else [logits]


def snapshot_function(config: EG3DConfig, count: int = 8) -> Callable[[dict], Tensor]:
    """Images of fixed latents from fixed orbit views, rendered by ``G_ema``, for run grids."""
    from headforge.apps.generate import camera_labels, frontal_label

    latents = torch.randn(count, config.z_dim, generator=torch.Generator().manual_seed(0))
    yaw = torch.linspace(-0.4, 0.4, count)

    @torch.no_grad()
    def snapshot(networks: dict) -> Tensor:
        generator = networks["G_ema"]
        device = next(generator.parameters()).device
        output = generator(
            latents.to(device),
            frontal_label(count, device),
            camera=camera_labels(yaw, torch.zeros(count), device),
            truncation_psi=1.0,
            noise_mode="const",
            perturb=False,
        )
        return output["image"]

    return snapshot


def build_training(config: EG3DConfig, dataset, device: torch.device) -> TrainingPlan:
    """Networks, optimisers and phases of an EG3D run on ``dataset``."""
    generator = TriplaneGenerator(config)
    discriminator = build_discriminator(config)
    objective = EG3DObjective(
        config, dataset.labels_tensor(include_mirrored=getattr(dataset, "xflip", False))
    )
    adversarial = adversarial_networks(generator, discriminator, config)
    g_optimizer, d_optimizer = adversarial.g_optimizer, adversarial.d_optimizer
    phases = [
        Phase("Gmain", "G", g_optimizer, objective.generator_main),
        Phase("Greg", "G", g_optimizer, objective.generator_density, interval=config.density_reg_interval),
        Phase("Dmain", "D", d_optimizer, objective.discriminator_main),
        Phase("Dreg", "D", d_optimizer, objective.discriminator_r1, interval=config.r1_interval),
    ]
    if config.density_reg <= 0:
        phases = [phase for phase in phases if phase.name != "Greg"]
    return TrainingPlan(
        networks=adversarial.networks,
        phases=phases,
        ema_of={"G_ema": "G"},
        ema_kimg=config.ema_kimg,
        ema_rampup=config.ema_rampup,
        image_snapshot_fn=snapshot_function(config),
        on_step_end=adapt_augmentation,
    )


def generation_stages(generator: TriplaneGenerator, device: torch.device) -> dict[str, Callable[[], object]]:
    """EG3D's stages at batch 1, each fed the previous stage's cached output: for ``headforge bench``."""
    from headforge.apps.generate import frontal_label

    z = torch.randn(1, generator.config.z_dim, device=device)
    c = frontal_label(1, device)
    ws = generator.map(z, c)
    planes = generator.synthesize_planes(ws, noise_mode="const")
    raw = generator.render_raw(planes, c, perturb=False)
    return {
        "mapping": lambda: generator.map(z, c),
        "synthesis": lambda: generator.synthesize_planes(ws, noise_mode="const"),
        "rendering": lambda: generator.render_raw(planes, c, perturb=False),
        "superresolution": lambda: generator.superresolve(raw, ws, noise_mode="const"),
        "full": lambda: generator(z, c, noise_mode="const", perturb=False),
    }


SPEC = ModelSpec(
    name="eg3d",
    description="EG3D tri-plane GAN (the shared backbone of every headforge system)",
    presets=PRESETS,
    config_from_dict=EG3DConfig.from_dict,
    build_generator=TriplaneGenerator,
    build_discriminator=build_discriminator,
    build_training=build_training,
    generation_stages=generation_stages,
)
