"""NeRFFaceShop's training objective (§III-C) as trainer phases, on frame pairs from video clips.

Real data: pairs of frames of one clip, drawn by adaptive sampling (§III-C2,
``headforge.data.pairs``; ``pair_sampling="uniform"`` is the ablation). Fake
data: one identity z, two animation codes m ~ N(0, I), rendered under the
two real frames' cameras and lights (so fake and real pairs share the
distribution of conditions, as EG3D draws its fake cameras from the data).
Both frames share the identity's synthesis up to B32 and the per-pixel noise
of every later layer, as frames of one video share the person's fine detail.

* ``Gmain``: non-saturating loss on D_image (each frame) and D_video (the pair)
  plus the minimal deformation loss ``alpha |delta_shape| + beta |delta_exp|``
  (alpha = 1, beta = 0.1; optionally each with the released code's
  roughness). Gradients cross the fixed-point inverse of delta_shape through
  its last step only (``warp_backprop_steps``): through
  all 20 they grew like Lip(delta_shape)^20 once the field folded, and a run
  of the ``small`` preset diverged at 14 kimg that way (docs/nerffaceshop.md).
* ``Greg`` (every 4 steps): EG3D's density regulariser (0.25) and
  NeRFFaceLighting's lighting regulariser (25): *cross texture*, the image must
  not change when its shading tri-planes come from another identity with the
  same geometry (the same convolutional styles up to B32), and *cross
  shading*, the image under a slightly perturbed light divided by the original
  shading must give back the albedo (L1; the released code uses LPIPS, which
  needs downloaded weights, and divides by the opacity-weighted composited
  shading, which equals the ray's shading only where the opacity is 1).
* ``Dmain``: logistic loss of both discriminators on fake and real pairs.
* ``Dreg`` (every 16 steps): R1 of both discriminators on real pairs, gamma / 2.

While a run holds animation at 0 (``animation_warmup_kimg``) D_video sits
out of every phase: the paper's first stage trains a static rolled-out EG3D
on images alone, and a static G's two frames differ only in camera and
light, where every real pair also changes expression, so D_video's verdict
is one G cannot meet (in the ``small`` run its logit gap was about 4 against
D_image's 2, and its term was most of G's adversarial loss).

Blur, rendering-resolution and conditioning-swap schedules are EG3D's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.pairs import AdaptivePairSampler, PairDataset, UniformPairSampler, dataset_frame_features
from headforge.models.nerffaceshop import (
    PRESETS,
    NeRFFaceShopConfig,
    NeRFFaceShopGenerator,
    build_discriminator,
)
from headforge.models.registry import ModelSpec, TrainingPlan
from headforge.nn.filters import filtered_resize
from headforge.nn.pair_discriminator import stack_conditions
from headforge.nn.warp import displacement_magnitude, lipschitz_bound, minimal_deformation_loss
from headforge.training.losses import (
    density_regularizer,
    discriminator_fake_loss,
    discriminator_real_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    swap_conditioning,
)
from headforge.training.phases import Phase, PhaseContext, StepInfo
from headforge.training.schedules import conditioning_swap_probability
from headforge.training.steps.common import adapt_augmentation, adversarial_networks
from headforge.training.steps.eg3d import EG3DObjective


class GlobalRngSnapshot:
    """The global RNG states (CPU, and the CUDA device's), to replay the same random draws.

    Synthesis noise and rendering jitter come from the global RNGs; restoring a
    snapshot before the second frame of a pair gives it the first frame's
    noise (NeRFFaceShop's code stores and retrieves the noise instead).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


class NeRFFaceShopObjective(EG3DObjective):
    """The losses of NeRFFaceShop's four phases; EG3D's schedules are inherited.

    Batches are ``PairDataset`` items collated: ``image`` (b, 2, 3, R, R),
    ``camera`` (b, 2, 25), ``sh`` (b, 2, 9, 3).
    """

    config: NeRFFaceShopConfig

    # ------------------------------------------------------------------ shared pieces
    def conditions(self, ctx: PhaseContext) -> tuple[Tensor, Tensor, Tensor]:
        """Cameras (b, 2, 25), SH (b, 2, 9, 3) of the batch's pairs and D's conditions (b, 2, 52)."""
        camera, sh = ctx.batch["camera"], ctx.batch["sh"]
        return camera, sh, stack_conditions(camera, sh)

    def encode_fake_identity(self, ctx: PhaseContext, camera: Tensor, update_emas: bool = False) -> Tensor:
        """Omega (b, num_ws, w_dim) of fresh latents, conditioned on (possibly swapped) cameras (b, 25)."""
        probability = conditioning_swap_probability(ctx.cur_nimg, self.config.pose_swap_probability)
        if probability is not None:
            camera = swap_conditioning(camera, probability, ctx.generator)
        generator: NeRFFaceShopGenerator = ctx.networks["G"]
        return generator.encode_identity(
            ctx.randn(camera.shape[0], self.config.z_dim), camera, update_emas=update_emas
        )

    def generate_pair(
        self, ctx: PhaseContext, update_emas: bool = False
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """A fake pair (``image`` (b, 2, 3, H, W), ``image_raw``) and its deformation terms.

        The terms: ``minimal`` (the minimal deformation loss, scalar),
        ``shape_lipschitz`` (detached: the largest Lipschitz bound of a plane's
        delta_shape; the inverse in ``conjugate`` converges only below 1, so
        the training log watches it) and the fields' mean displacements
        ``shape_magnitude`` and ``expression_magnitude`` (detached, normalised
        units: 2 is the plane's width).
        """
        generator: NeRFFaceShopGenerator = ctx.networks["G"]
        config, batch = self.config, ctx.batch_size
        camera, sh, _ = self.conditions(ctx)
        resolution = self.rendering_resolution(ctx.cur_nimg)
        ws = self.encode_fake_identity(ctx, camera[:, 0], update_emas)
        base = generator.synthesize_to_32(ws)  # shared by both frames
        noise = GlobalRngSnapshot(ctx.device)
        motion = generator.encode_motion(ctx.randn(2 * batch, config.motion_dim), update_emas)
        expression = generator.expression_field(motion).unflatten(0, (2, batch))
        lighting = generator.encode_lighting(sh.transpose(0, 1).flatten(0, 1), update_emas).unflatten(
            0, (2, batch)
        )
        frames = []
        for frame in range(2):
            if frame:
                noise.restore()  # the second frame draws the first frame's noise and jitter
            albedo = generator.synthesize_albedo_planes(ws, generator.animate(base, expression[frame]))
            shading = generator.synthesize_shading_planes(ws, albedo, lighting[frame])
            frames.append(
                generator.render(
                    albedo.planes, shading, ws, camera[:, frame], resolution, superresolve=("image",)
                )
            )
        fake = {key: torch.stack([frames[0][key], frames[1][key]], dim=1) for key in ("image", "image_raw")}
        minimal = minimal_deformation_loss(
            base.shape_field.flatten(0, 1),
            expression.flatten(0, 2),
            config.minimal_alpha,
            config.minimal_beta,
            config.minimal_smoothness,
        )
        shape_lipschitz = lipschitz_bound(base.shape_field.detach().flatten(0, 1)).amax()
        return fake, {
            "minimal": minimal,
            "shape_lipschitz": shape_lipschitz,
            "shape_magnitude": displacement_magnitude(base.shape_field.detach().flatten(0, 1)),
            "expression_magnitude": displacement_magnitude(expression.detach().flatten(0, 2)),
        }

    def real_pair(self, ctx: PhaseContext) -> dict[str, Tensor]:
        """The batch's pair (b, 2, 3, R, R) and its raw companion at the rendering resolution."""
        image = ctx.batch["image"]
        raw = filtered_resize(image.flatten(0, 1), self.rendering_resolution(ctx.cur_nimg))
        return {"image": image, "image_raw": raw.unflatten(0, image.shape[:2])}

    def uses_video(self, ctx: PhaseContext) -> bool:
        """Whether D_video takes part at this point of training: not while animation is held at 0."""
        return self.config.video_weight > 0 and self.config.expression_gain(ctx.cur_nimg / 1000) > 0

    def discriminate_pair(
        self, ctx: PhaseContext, pair: dict[str, Tensor], real: bool = False
    ) -> dict[str, Tensor]:
        """Logits of a pair: ``image`` (b, 2) and, when D_video takes part, ``video`` (b, 1)."""
        return self.discriminate(ctx, pair, self.conditions(ctx)[2], real=real, video=self.uses_video(ctx))

    def weighted(self, terms: dict[str, Tensor]) -> Tensor:
        """D_image's term plus ``video_weight`` times D_video's, when D_video took part."""
        total = terms["image"]
        if "video" in terms:
            total = total + self.config.video_weight * terms["video"]
        return total

    def adversarial(self, logits: dict[str, Tensor], loss_fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``loss_fn`` averaged over each discriminator's logits, combined by `weighted`, scalar."""
        return self.weighted({name: loss_fn(value).mean() for name, value in logits.items()})

    @staticmethod
    def scores(logits: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
        """Mean logits to log: ``{prefix}_image`` and, when D_video took part, ``{prefix}_video``."""
        return {f"{prefix}_{name}": value.mean() for name, value in logits.items()}

    # ------------------------------------------------------------------ phases
    def generator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        fake, deformation = self.generate_pair(ctx)
        logits = self.discriminate_pair(ctx, fake)
        adversarial = self.adversarial(logits, nonsaturating_generator_loss)
        return {"loss": adversarial + deformation["minimal"], **deformation, **self.scores(logits, "score")}

    def generator_regularizers(self, ctx: PhaseContext) -> dict[str, Tensor]:
        """Density and lighting regularisers on half the batch (as NeRFFaceShop's code), constant noise."""
        generator: NeRFFaceShopGenerator = ctx.networks["G"]
        config = self.config
        camera, sh, _ = self.conditions(ctx)
        half = max(1, ctx.batch_size // 2)
        camera, sh = camera[:half, 0], sh[:half, 0]
        ws = self.encode_fake_identity(ctx, camera)
        expression = generator.expression_field(generator.encode_motion(ctx.randn(half, config.motion_dim)))
        lighting = generator.encode_lighting(sh)
        losses: dict[str, Tensor] = {}

        def albedo_of(styles: Tensor):
            base = generator.synthesize_to_32(styles, noise_mode="const")
            return generator.synthesize_albedo_planes(styles, generator.animate(base, expression), "const")

        def render(planes: Tensor, shading: Tensor, superresolve: tuple[str, ...]) -> dict[str, Tensor]:
            resolution = self.rendering_resolution(ctx.cur_nimg)
            return generator.render(planes, shading, ws, camera, resolution, False, "const", superresolve)

        albedo = albedo_of(ws)
        total = torch.zeros((), device=ctx.device)
        if config.lighting_reg > 0:
            shading = generator.synthesize_shading_planes(ws, albedo, lighting, "const")
            original = render(albedo.planes, shading, ("image",))
            # Cross texture: shading planes of another identity with the same geometry styles.
            geometry = sum(
                block.num_conv for block in generator.backbone.blocks[: generator.num_geometry_blocks]
            )
            other_ws = self.encode_fake_identity(ctx, camera)
            other_ws = torch.cat([ws[:, :geometry], other_ws[:, geometry:]], dim=1)
            other_shading = generator.synthesize_shading_planes(
                other_ws, albedo_of(other_ws), lighting, "const"
            )
            crossed = render(albedo.planes, other_shading, ("image",))
            losses["cross_texture"] = F.l1_loss(original["image"], crossed["image"])
            # Cross shading: a slightly different light, divided by the original shading, gives the albedo.
            jitter = sh + ctx.batch["sh"].flatten(0, 1).std(
                dim=0
            ) * config.lighting_reg_sh_jitter * ctx.randn(*sh.shape)
            relit_shading = generator.synthesize_shading_planes(
                ws, albedo, generator.encode_lighting(jitter), "const"
            )
            relit = render(albedo.planes, relit_shading, ())
            # The composited shading is opacity-weighted; its ray average is shading / opacity.
            ray_shading = original["shading"] / original["opacity"].clamp_min(1e-5)
            unshaded = ((relit["image_raw"] + 1) / 2 / (ray_shading + 1e-5)).clamp(0, 2) * 2 - 1
            losses["cross_shading"] = F.l1_loss(relit["albedo_raw"], unshaded)
            total = total + (losses["cross_texture"] + losses["cross_shading"]) * config.lighting_reg
        if config.density_reg > 0:
            losses["density_tv"] = density_regularizer(
                lambda points: generator.sample_density(albedo.planes, points),
                half,
                jitter=config.density_reg_jitter,
                box=config.box_warp / 2,
                generator=ctx.generator,
                device=ctx.device,
            )
            total = total + losses["density_tv"] * config.density_reg
        return {"loss": total * ctx.gain, **losses}

    def discriminator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        with torch.no_grad():
            fake, _ = self.generate_pair(ctx, update_emas=True)
        fake_logits = self.discriminate_pair(ctx, fake)
        real_logits = self.discriminate_pair(ctx, self.real_pair(ctx), real=True)
        loss = self.adversarial(fake_logits, discriminator_fake_loss) + self.adversarial(
            real_logits, discriminator_real_loss
        )
        return {
            "loss": loss,
            **self.scores(fake_logits, "score_fake"),
            **self.scores(real_logits, "score_real"),
            # StyleGAN2-ADA's overfitting heuristic r_t = E[sign(D(real))]: near 1, D has memorised the reals.
            **self.scores({name: value.sign() for name, value in real_logits.items()}, "sign_real"),
            **self.augment_probability(ctx),
        }

    def discriminator_r1(self, ctx: PhaseContext) -> dict[str, Tensor]:
        real = {key: value.detach().requires_grad_(True) for key, value in self.real_pair(ctx).items()}
        logits = self.discriminate_pair(ctx, real)
        inputs = [real["image"], real["image_raw"]]
        penalty = self.weighted({name: r1_penalty(value, inputs) for name, value in logits.items()})
        return {
            "loss": (penalty * (self.config.r1_gamma / 2)).mean() * ctx.gain,
            "r1_penalty": penalty.mean(),
        }


# ---------------------------------------------------------------------- data, snapshots, plan


def build_dataset(config: NeRFFaceShopConfig, dataset, seed: int = 0) -> PairDataset:
    """Frame pairs of the dataset's clips: adaptive sampling on expression + jaw parameters, or uniform."""
    clips = dataset.clips()
    if config.pair_sampling == "adaptive":
        sampler = AdaptivePairSampler(clips, dataset_frame_features(dataset), tau=config.pair_tau, seed=seed)
    else:
        sampler = UniformPairSampler(clips, seed=seed)
    return PairDataset(dataset, sampler, seed=seed)


def random_pair_batch(config: NeRFFaceShopConfig, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
    """A random batch shaped like collated ``PairDataset`` items, for timing the phases.

    ``image`` (b, 2, 3, R, R) in [-1, 1], ``camera`` (b, 2, 25) FFHQ-like poses,
    ``sh`` (b, 2, 9, 3) directional lights plus ambient.
    """
    from headforge.cameras import Camera, sample_ffhq_poses
    from headforge.lighting import directional_light_sh

    rng = torch.Generator().manual_seed(seed)
    resolution = config.output_resolution
    yaw, pitch = sample_ffhq_poses(2 * batch_size, generator=rng)
    directions = torch.randn(2 * batch_size, 3, generator=rng) + torch.tensor([0.0, 0.0, 1.5])
    return {
        "image": torch.rand(batch_size, 2, 3, resolution, resolution, generator=rng) * 2 - 1,
        "camera": Camera.orbit(yaw, pitch).to_label().reshape(batch_size, 2, 25),
        "sh": directional_light_sh(directions, color=0.6, ambient=0.4).reshape(batch_size, 2, 9, 3),
    }


def snapshot_function(config: NeRFFaceShopConfig, count: int = 8) -> Callable[[dict], Tensor]:
    """``G_ema``'s images of fixed identities and animations from an orbit, under the average light."""
    from headforge.apps.generate import camera_labels, frontal_label

    rng = torch.Generator().manual_seed(0)
    latents = torch.randn(count, config.z_dim, generator=rng)
    motions = torch.randn(count, config.motion_dim, generator=rng)
    yaw = torch.linspace(-0.4, 0.4, count)

    @torch.no_grad()
    def snapshot(networks: dict) -> Tensor:
        generator = networks["G_ema"]
        device = generator.sh_avg.device
        output = generator(
            latents.to(device),
            frontal_label(count, device),
            motions.to(device),
            generator.sh_avg.expand(count, -1),
            camera=camera_labels(yaw, torch.zeros(count), device),
            noise_mode="const",
            perturb=False,
        )
        return output["image"]

    return snapshot


def animation_schedule(config: NeRFFaceShopConfig) -> Callable[[StepInfo], None]:
    """``on_step_start`` hook: set G's expression gain for the images shown so far (see the config).

    G_ema copies G's buffers at every EMA update, so snapshots and exports
    render with the same gain as training.
    """

    def set_gain(info: StepInfo) -> None:
        info.networks["G"].expression_gain.fill_(config.expression_gain(info.cur_nimg / 1000))

    return set_gain


def build_training(config: NeRFFaceShopConfig, dataset, device: torch.device) -> TrainingPlan:
    """Networks, optimisers and phases of a NeRFFaceShop run.

    ``dataset`` is the ``PairDataset`` the trainer iterates (from
    ``build_dataset``) or any dataset with ``labels_tensor``; the phases expect
    pair batches (see ``random_pair_batch`` for timing runs).
    """
    frames = dataset.dataset if isinstance(dataset, PairDataset) else dataset
    generator = NeRFFaceShopGenerator(config)
    discriminator = build_discriminator(config)
    objective = NeRFFaceShopObjective(
        config, frames.labels_tensor(include_mirrored=getattr(frames, "xflip", False))
    )
    adversarial = adversarial_networks(generator, discriminator, config)
    g_optimizer, d_optimizer = adversarial.g_optimizer, adversarial.d_optimizer
    phases = [Phase("Gmain", "G", g_optimizer, objective.generator_main)]
    if config.density_reg > 0 or config.lighting_reg > 0:
        phases.append(
            Phase(
                "Greg",
                "G",
                g_optimizer,
                objective.generator_regularizers,
                interval=config.density_reg_interval,
            )
        )
    phases += [
        Phase("Dmain", "D", d_optimizer, objective.discriminator_main),
        Phase("Dreg", "D", d_optimizer, objective.discriminator_r1, interval=config.r1_interval),
    ]
    return TrainingPlan(
        networks=adversarial.networks,
        phases=phases,
        ema_of={"G_ema": "G"},
        ema_kimg=config.ema_kimg,
        ema_rampup=config.ema_rampup,
        image_snapshot_fn=snapshot_function(config),
        on_step_start=animation_schedule(config),
        on_step_end=adapt_augmentation,
    )


def generation_stages(
    generator: NeRFFaceShopGenerator, device: torch.device
) -> dict[str, Callable[[], object]]:
    """The full pass and the three incremental control paths at batch 1, for ``headforge bench``.

    Each path ends with rendering + super-resolution, so the times compare what
    a viewer pays when the camera, the light or the animation changes.
    """
    from headforge.apps.generate import frontal_label
    from headforge.lighting import directional_light_sh
    from headforge.models.nerffaceshop_controls import HeadControls

    config = generator.config
    controls = HeadControls(generator)
    z = torch.randn(1, config.z_dim, device=device)
    m = torch.randn(1, config.motion_dim, device=device)
    camera = frontal_label(1, device)
    sh = directional_light_sh(torch.tensor([[0.3, 0.2, 1.0]]), color=0.6, ambient=0.4).to(device)
    cache = controls.build(z, camera, m, sh)
    return {
        "camera_only": lambda: controls.render(cache, camera),
        "light_only": lambda: controls.render(controls.relight(cache, sh), camera),
        "animation_only": lambda: controls.render(controls.reanimate(cache, m), camera),
        "full": lambda: controls.render(controls.build(z, camera, m, sh), camera),
    }


SPEC = ModelSpec(
    name="nerffaceshop",
    description="NeRFFaceShop: animatable, relightable tri-plane GAN trained on video frame pairs",
    presets=PRESETS,
    config_from_dict=NeRFFaceShopConfig.from_dict,
    build_generator=NeRFFaceShopGenerator,
    build_discriminator=build_discriminator,
    build_training=build_training,
    required_dataset_keys=("sh", "clips"),
    build_dataset=build_dataset,
    generation_stages=generation_stages,
    benchmark_batch=random_pair_batch,
)
