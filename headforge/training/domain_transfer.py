"""NeRFFaceShop domain transfer (§IV-B): fine-tune G on stylised copies of its own images, G_motion fixed.

Two steps:

1. ``export``: G renders source images I_a = G(omega, l, G_motion(m)) from random
   identities (omega, stored as ws), lights, animations m (``--neutral``: m = 0,
   the neutral face, for domains whose stylisation cannot keep expressions) and
   FFHQ-like cameras. The folder is an ordinary dataset (``images/*.png`` +
   ``dataset.json`` with ``labels`` and the source ``sh``) plus
   ``latents.safetensors`` (``ws``, ``m``, ``z``, ``sh_source``; its metadata
   lists the files row by row). Stylise the images with any tool and put the
   results back under the same names.
2. fine-tuning: for each target image I_b and its latents,

       L = L_perc(G(omega, l_hat, G_motion(m)), I_b) + 0.05 * L_adv,

   where l_hat is the target image's lighting *relabelled* by the lighting
   estimator (stylisation does not keep lighting; ``lighting="dataset"`` keeps
   the ``sh`` of dataset.json instead), L_perc is headforge's feature distance
   (``perceptual_distance`` on ``HeadforgeFeatureNet``: LPIPS's structure, not
   LPIPS) and L_adv the non-saturating loss of the image discriminator D_image
   (fine-tuned with the logistic loss and R1, as in training). G_motion (its
   mapping and synthesis) is frozen; omega is stored, so the identity mapping
   receives no gradient either. The loop is the generic ``Trainer``: runs
   checkpoint, resume, and load with ``load_generator`` like any NeRFFaceShop run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from headforge.cameras import Camera, sample_ffhq_poses
from headforge.data.dataset import HeadDataset
from headforge.data.dataset_json import write_dataset_json
from headforge.eval.features import FeatureNetwork, HeadforgeFeatureNet
from headforge.eval.image_metrics import perceptual_distance
from headforge.imaging import save_png, to_uint8
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, build_discriminator
from headforge.models.nerffaceshop_controls import HeadControls
from headforge.nn.filters import filtered_resize
from headforge.runtime import default_device
from headforge.training.checkpoint import load_checkpoint, load_module_state
from headforge.training.losses import (
    discriminator_fake_loss,
    discriminator_real_loss,
    nonsaturating_generator_loss,
    r1_penalty,
)
from headforge.training.nerffaceshop_driving import frontal_cameras, random_lights
from headforge.training.phases import Phase, PhaseContext, make_adam
from headforge.training.trainer import Trainer

__all__ = [
    "LATENTS_FILE",
    "DomainTransferDataset",
    "DomainTransferObjective",
    "add_finetune_domain_parser",
    "export_source_images",
    "finetune_domain",
    "motion_parameters",
    "run_finetune_domain",
]

LATENTS_FILE = "latents.safetensors"
#: images (B, 3, H, W) in [-1, 1] -> {"sh": (B, 9, 3)} (``headforge.eval.estimators``, kind "lighting").
LightingEstimator = Callable[[Tensor], Mapping[str, Tensor]]


# ---------------------------------------------------------------------- step 1: export


@torch.no_grad()
def export_source_images(
    generator: NeRFFaceShopGenerator,
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    truncation_psi: float = 0.7,
    neutral: bool = False,
    batch: int = 4,
    source: str | None = None,
) -> Path:
    """Render ``count`` source images with their latents into ``out_dir``; returns dataset.json's path."""
    out_dir = Path(out_dir)
    device = generator.sh_avg.device
    config = generator.config
    rng = torch.Generator(device=device).manual_seed(seed)
    controls = HeadControls(generator, noise_mode="const")
    labels, lights, latents = {}, {}, {"ws": [], "m": [], "z": [], "sh_source": []}
    files = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        z = torch.randn(size, config.z_dim, generator=rng, device=device)
        m = torch.randn(size, config.motion_dim, generator=rng, device=device)
        m = torch.zeros_like(m) if neutral else m
        sh = random_lights(size, rng, device)
        camera = Camera.orbit(*sample_ffhq_poses(size, generator=rng)).to_label()
        cache = controls.build(z, frontal_cameras(size, device), m, sh, truncation_psi)
        images = to_uint8(controls.render(cache, camera, superresolve=("image",))["image"])
        for row in range(size):
            name = f"images/img{start + row:08d}.png"
            save_png(images[row], out_dir / name)
            files.append(name)
            labels[name], lights[name] = camera[row], sh[row]
        for key, value in (("ws", cache.ws), ("m", m), ("z", z), ("sh_source", sh)):
            latents[key].append(value.cpu())
    tensors = {key: torch.cat(values).contiguous() for key, values in latents.items()}
    save_file(tensors, str(out_dir / LATENTS_FILE), metadata={"files": json.dumps(files)})
    meta = {
        "domain_transfer": {
            "latents": LATENTS_FILE,
            "checkpoint": source,
            "seed": seed,
            "truncation_psi": truncation_psi,
            "neutral": neutral,
        }
    }
    return write_dataset_json(out_dir, labels, sh=lights, meta=meta)


# ---------------------------------------------------------------------- step 2: fine-tuning data


class DomainTransferDataset(torch.utils.data.Dataset):
    """Target-domain images paired with the latents that generated their sources.

    Items: ``image`` I_b (3, R, R) in [-1, 1], ``camera`` (25,), ``sh`` l_hat (9, 3),
    ``ws`` omega (num_ws, w_dim), ``m`` (motion_dim,).

    Args:
        path: a folder written by :func:`export_source_images` (images replaced by stylised ones).
        lighting_estimator: relabels every image's lighting (run once here, in
            batches of ``batch``); None keeps dataset.json's ``sh``.
        device: where the estimator runs.
    """

    def __init__(
        self,
        path: str | Path,
        lighting_estimator: LightingEstimator | None = None,
        batch: int = 16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.path = Path(path)
        self.images = HeadDataset(self.path)
        latents_path = self.path / LATENTS_FILE
        if not latents_path.is_file():
            raise FileNotFoundError(
                f"{latents_path}: not found; create the folder with `finetune-domain export`"
            )
        with safe_open(str(latents_path), framework="pt") as handle:
            stored_files = json.loads((handle.metadata() or {}).get("files", "[]"))
        latents = load_file(str(latents_path))
        row_of = {name: row for row, name in enumerate(stored_files)}
        missing = [name for name in self.images.files if name not in row_of]
        if missing:
            raise ValueError(f"{self.path}: {len(missing)} images have no latents (first: {missing[0]})")
        rows = torch.tensor([row_of[name] for name in self.images.files])
        self.ws, self.m = latents["ws"][rows], latents["m"][rows]
        if lighting_estimator is None:
            if not self.images.has_sh:
                raise ValueError(
                    f"{self.path}: dataset.json has no 'sh'; relabel with the lighting estimator"
                )
            self.sh = torch.stack([self.images[i]["sh"] for i in range(len(self.images))])
        else:
            self.sh = self._relabel(lighting_estimator, batch, device)

    @torch.no_grad()
    def _relabel(self, estimator: LightingEstimator, batch: int, device: torch.device | str) -> Tensor:
        rows = []
        for start in range(0, len(self.images), batch):
            stop = min(start + batch, len(self.images))
            images = torch.stack([self.images[i]["image"] for i in range(start, stop)]).to(device)
            rows.append(estimator(images)["sh"].reshape(-1, 9, 3).float().cpu())
        return torch.cat(rows)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        return {
            "image": item["image"],
            "camera": item["camera"],
            "sh": self.sh[index],
            "ws": self.ws[index],
            "m": self.m[index],
        }


# ---------------------------------------------------------------------- the objective


def motion_parameters(generator: NeRFFaceShopGenerator) -> list[nn.Parameter]:
    """G_motion's parameters (its mapping and synthesis), the part held fixed."""
    return [*generator.motion_mapping.parameters(), *generator.motion_synthesis.parameters()]


class DomainTransferObjective:
    """Gmain (perceptual + 0.05 x non-saturating), Dmain (logistic), Dreg (R1) on D_image.

    ``feature_network``: the perceptual distance's network (default ``HeadforgeFeatureNet()``),
    moved to ``device`` (the training device).
    """

    def __init__(
        self,
        generator: NeRFFaceShopGenerator,
        feature_network: FeatureNetwork | None = None,
        adversarial_weight: float = 0.05,
        device: torch.device | str = "cpu",
    ) -> None:
        config = generator.config
        self.config = config
        self.resolution = config.neural_rendering_resolution_final or config.neural_rendering_resolution
        self.feature_network = (feature_network or HeadforgeFeatureNet()).to(device)
        self.adversarial_weight = adversarial_weight

    def render(self, ctx: PhaseContext) -> dict[str, Tensor]:
        """G(omega, l_hat, G_motion(m)) from the batch's cameras: ``image`` and ``image_raw``."""
        generator: NeRFFaceShopGenerator = ctx.networks["G"]
        batch = ctx.batch
        ws = batch["ws"]
        expression = generator.expression_field(generator.encode_motion(batch["m"]))
        animated = generator.animate(generator.synthesize_to_32(ws, "const"), expression)
        albedo = generator.synthesize_albedo_planes(ws, animated, "const")
        shading = generator.synthesize_shading_planes(
            ws, albedo, generator.encode_lighting(batch["sh"]), "const"
        )
        return generator.render(
            albedo.planes, shading, ws, batch["camera"], self.resolution, superresolve=("image",)
        )

    def condition(self, ctx: PhaseContext) -> Tensor:
        """D_image's condition [camera (25), SH (27)] per image, (B, 52)."""
        return torch.cat([ctx.batch["camera"], ctx.batch["sh"].flatten(1)], dim=1)

    def real(self, ctx: PhaseContext) -> dict[str, Tensor]:
        image = ctx.batch["image"]
        return {"image": image, "image_raw": filtered_resize(image, self.resolution)}

    def generator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        fake = self.render(ctx)
        perceptual = perceptual_distance(fake["image"], ctx.batch["image"], self.feature_network).mean()
        logits = ctx.networks["D"].image(fake, self.condition(ctx))
        adversarial = nonsaturating_generator_loss(logits).mean()
        return {
            "loss": perceptual + self.adversarial_weight * adversarial,
            "perceptual": perceptual,
            "adversarial": adversarial,
        }

    def discriminator_main(self, ctx: PhaseContext) -> dict[str, Tensor]:
        discriminator = ctx.networks["D"].image
        with torch.no_grad():
            fake = self.render(ctx)
        fake_logits = discriminator(fake, self.condition(ctx))
        real_logits = discriminator(self.real(ctx), self.condition(ctx))
        loss = discriminator_fake_loss(fake_logits).mean() + discriminator_real_loss(real_logits).mean()
        return {"loss": loss, "score_fake": fake_logits.mean(), "score_real": real_logits.mean()}

    def discriminator_r1(self, ctx: PhaseContext) -> dict[str, Tensor]:
        real = {key: value.detach().requires_grad_(True) for key, value in self.real(ctx).items()}
        logits = ctx.networks["D"].image(real, self.condition(ctx))
        penalty = r1_penalty(logits, [real["image"], real["image_raw"]])
        return {
            "loss": (penalty * (self.config.r1_gamma / 2)).mean() * ctx.gain,
            "r1_penalty": penalty.mean(),
        }


def finetune_domain(
    checkpoint: str | Path,
    dataset: DomainTransferDataset,
    out_dir: str | Path,
    kimg: float = 320.0,
    batch_size: int = 16,
    seed: int = 0,
    device: torch.device | str = "cpu",
    feature_network: FeatureNetwork | None = None,
    adversarial_weight: float = 0.05,
    checkpoint_every: int | None = 500,
    resume: bool = False,
    max_steps: int | None = None,
    lighting: str = "estimate",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune a NeRFFaceShop checkpoint's G (from its G_ema) and D_image on ``dataset``.

    Default length: about the paper's 20k steps of batch 16 (320 kimg). Returns the trainer's summary.
    """
    from headforge.apps.loading import resolve_checkpoint
    from headforge.models.registry import get_model_spec

    stem = resolve_checkpoint(checkpoint)
    tensors, meta = load_checkpoint(stem)
    run_config = meta.get("config", {})
    if run_config.get("model") != "nerffaceshop":
        raise ValueError(f"{stem}: a NeRFFaceShop checkpoint is needed, got {run_config.get('model')!r}")
    config = get_model_spec("nerffaceshop").config_from_dict(run_config["model_config"])
    networks = {"G": NeRFFaceShopGenerator(config), "G_ema": NeRFFaceShopGenerator(config)}
    for module in networks.values():
        load_module_state(module, tensors, "G_ema.")  # start from the smoothed weights
    networks["G_ema"].eval().requires_grad_(False)
    networks["D"] = build_discriminator(config)
    load_module_state(networks["D"], tensors, "D.")
    generator, discriminator = networks["G"], networks["D"]
    for param in motion_parameters(generator):
        param.requires_grad_(False)
    discriminator.video.requires_grad_(False)  # only D_image judges single stylised images
    objective = DomainTransferObjective(generator, feature_network, adversarial_weight, device)
    g_optimizer = make_adam([p for p in generator.parameters() if p.requires_grad], config.g_lr, config.betas)
    d_optimizer = make_adam(
        discriminator.image.parameters(), config.d_lr, config.betas, interval=config.r1_interval
    )
    trainer = Trainer(
        networks=networks,
        phases=[
            Phase("Gmain", "G", g_optimizer, objective.generator_main),
            Phase("Dmain", "D", d_optimizer, objective.discriminator_main),
            Phase("Dreg", "D", d_optimizer, objective.discriminator_r1, interval=config.r1_interval),
        ],
        dataset=dataset,
        batch_size=batch_size,
        total_kimg=kimg,
        out_dir=out_dir,
        config={
            "model": "nerffaceshop",
            "model_config": config.to_dict(),
            "domain_transfer": {
                "source": str(Path(stem).resolve()),
                "images": str(dataset.path.resolve()),
                "lighting": lighting,
                "adversarial_weight": adversarial_weight,
            },
        },
        ema_of={"G_ema": "G"},
        ema_kimg=config.ema_kimg,
        ema_rampup=None,  # fine-tuning starts from a converged model
        seed=seed,
        device=device,
        checkpoint_every=checkpoint_every,
        resume=resume,
        max_steps=max_steps,
        progress=progress,
        tensorboard=False,
    )
    return trainer.train()


# ---------------------------------------------------------------------- command line


def add_finetune_domain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``headforge finetune-domain [export] ...`` (see docs/nerffaceshop_apps.md)."""
    p = subparsers.add_parser(
        "finetune-domain",
        help="NeRFFaceShop domain transfer: export source images, then fine-tune on stylised ones (§IV-B)",
        description="`finetune-domain export --ckpt CKPT --count N --out DIR` writes generated images "
        "with their latents; stylise DIR/images/*.png in place, then `finetune-domain --ckpt CKPT "
        "--images DIR --out RUN` fine-tunes G (G_motion fixed) with perceptual + 0.05 x adversarial loss.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("train", "export"),
        default="train",
        help="export source images, or fine-tune (the default)",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="NeRFFaceShop checkpoint or run folder")
    p.add_argument("--out", required=True, type=Path, help="export: dataset folder; train: run folder")
    p.add_argument("--count", type=int, default=1000, help="export: images to generate (default 1000)")
    p.add_argument("--neutral", action="store_true", help="export: neutral faces only (m = 0)")
    p.add_argument("--trunc", type=float, default=0.7, help="export: truncation psi (default 0.7)")
    p.add_argument("--images", type=Path, help="train: the exported folder with stylised images")
    p.add_argument("--kimg", type=float, default=320.0, help="train: thousands of images (default 320)")
    p.add_argument("--batch", type=int, default=16, help="train: batch size (default 16)")
    p.add_argument(
        "--lighting",
        choices=("estimate", "dataset"),
        default="estimate",
        help="train: relabel lighting with the estimator (default) or keep dataset.json's sh",
    )
    p.add_argument("--lighting-weights", type=Path, default=None, help="train: lighting estimator weights")
    p.add_argument("--checkpoint-every", type=int, default=500, help="train: steps between checkpoints")
    p.add_argument(
        "--resume", action="store_true", help="train: continue from the newest checkpoint in --out"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=run_finetune_domain)
    return p


def run_finetune_domain(args: argparse.Namespace) -> int:
    """Entry point of ``headforge finetune-domain``."""
    from headforge.training.nerffaceshop_driving import load_nerffaceshop

    device = default_device(args.device)
    if args.action == "export":
        generator, stem = load_nerffaceshop(args.ckpt, device)
        path = export_source_images(
            generator, args.out, args.count, args.seed, args.trunc, args.neutral, source=stem
        )
        print(f"wrote {args.count} source images and {path}; stylise {args.out / 'images'} in place")
        return 0
    if args.images is None:
        raise SystemExit(
            "finetune-domain: --images DIR is required (a folder made by `finetune-domain export`)"
        )
    estimator = None
    if args.lighting == "estimate":
        from headforge.eval.estimators import load_estimator

        estimator = load_estimator("lighting", weights=args.lighting_weights, device=device)
    dataset = DomainTransferDataset(args.images, estimator, device=device)
    summary = finetune_domain(
        args.ckpt,
        dataset,
        args.out,
        args.kimg,
        args.batch,
        args.seed,
        device,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        lighting=args.lighting,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0
