"""``headforge preprocess``: photos or talking-head clips -> a labelled EG3D-compatible dataset.

Stages, one module each (docs/preprocess.md): ``detect`` (MediaPipe face mesh and hands),
``landmarks_map`` (478 -> 68 iBUG + 2 irises), ``align`` (EG3D crop), ``pose_fit`` (camera),
``model_fit`` (head model), ``lighting_fit`` (SH), ``filters`` (video filters), ``report``
(PNG reports, index), ``pipeline`` (images), ``video`` (clips), ``command`` (the CLI),
``evaluation`` (accuracy on studio renders).
"""

from headforge.preprocess.command import add_preprocess_parser, run_preprocess
from headforge.preprocess.pipeline import PreprocessSettings, run_preprocess_images
from headforge.preprocess.video import run_preprocess_videos

__all__ = [
    "PreprocessSettings",
    "add_preprocess_parser",
    "run_preprocess",
    "run_preprocess_images",
    "run_preprocess_videos",
]
