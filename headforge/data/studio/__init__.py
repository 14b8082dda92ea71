"""The synthetic head studio: datasets with exact ground truth, made from the procedural head.

``headforge synth --preset P --count N --resolution R --seed S --out DIR [--workers K]``
calls :func:`run_synth`. Presets are listed in :data:`SYNTH_PRESETS`; the
output format, the passes and the conventions are described in docs/studio.md.

Modules (one job each): ``seeding`` (per-item seeds), ``noise`` (procedural
noise), ``appearance`` (per-identity colours and styles), ``uv_atlas`` /
``face_regions`` / ``skin_texture`` (the skin texture), ``hair``, ``body``,
``backgrounds``, ``lights`` (the rig and its SH label), ``shadows`` /
``shading`` (shadow maps, diffuse and specular shading), ``head_parts``
(materials and anatomy of a head model), ``surfaces`` (per-pixel
appearance), ``scene`` (posed meshes), ``render`` (image and passes),
``shots`` (scene sampling), ``trajectories`` (video motion), ``presets``,
``item`` (one image), ``writer`` (files), ``runner`` (the whole dataset),
``sheets`` (contact sheets and pass figures).
"""

from headforge.data.studio.presets import SYNTH_PRESETS, ItemPlan, SynthPreset, get_preset, plan_item
from headforge.data.studio.runner import STUDIO_VERSION, SynthError, default_head_model, run_synth

__all__ = [
    "SYNTH_PRESETS",
    "STUDIO_VERSION",
    "ItemPlan",
    "SynthError",
    "SynthPreset",
    "default_head_model",
    "get_preset",
    "plan_item",
    "run_synth",
]
