"""`headforge demo` on a small budget: every stage of the front-door job runs and writes its files."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import trimesh
from PIL import Image

from headforge.apps.demo import run_demo


def test_demo_writes_every_output(tmp_path: Path) -> None:
    written = run_demo(tmp_path / "demo", images=16, resolution=32, kimg=0.012, seed=1)
    assert set(written) == {"studio_contact_sheet", "generated_grid", "orbit_video", "mesh"}
    sheet = np.asarray(Image.open(written["studio_contact_sheet"]))
    assert sheet.shape == (128, 128, 3) and sheet.std() > 10  # 4 x 4 studio images, not blank
    grid = np.asarray(Image.open(written["generated_grid"]))
    assert grid.shape == (64, 256, 3)  # 8 generated images over their 8 depth maps
    assert len(imageio.mimread(written["orbit_video"])) == 48
    assert len(trimesh.load(written["mesh"], process=False).faces) > 0
    # A second run resumes the finished training instead of starting again.
    again = run_demo(tmp_path / "demo", images=16, resolution=32, kimg=0.012, seed=1)
    assert again["generated_grid"] == written["generated_grid"]
