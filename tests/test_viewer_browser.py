"""A person at the viewer: open it in headless Chromium, move sliders, see the image change, export.

Needs gradio, selenium and Debian's chromium + chromium-driver (``make test``
installs them when it runs as root); skips with the reason otherwise. With
HEADFORGE_UPDATE_DOCS=1 it also refreshes docs/images/viewer.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path

import pytest
import torch

from headforge.apps.loading import load_generator
from headforge.models.nerffaceshop import NeRFFaceShopGenerator
from headforge.models.nerffaceshop_config import preset
from headforge.training.checkpoint import save_checkpoint

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)
WAIT_S = 30  # upper bound on any one wait; a render of the tiny model takes well under a second
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "viewer.png"


def _browser_paths() -> tuple[str, str]:
    """Chromium and its driver, or skip saying what is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        reason = "Debian chromium / chromium-driver not installed (run `make test` as root, or apt-get them)"
        print(f"test_viewer_browser skipped: {reason}")
        pytest.skip(reason)
    return browser, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tiny_checkpoint(directory: Path) -> Path:
    """An untrained tiny NeRFFaceShop saved as a trainer would (G_ema weights + model config)."""
    torch.manual_seed(0)
    config = preset("tiny")
    generator = NeRFFaceShopGenerator(config)
    tensors = {f"G_ema.{name}": tensor for name, tensor in generator.state_dict().items()}
    meta = {"config": {"model": "nerffaceshop", "model_config": config.to_dict()}}
    return save_checkpoint(directory / "step-00000000", tensors, meta)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:  # noqa: S310 (localhost only)
        return response.read()


def test_viewer_in_a_browser(tmp_path: Path) -> None:
    browser, driver_path = _browser_paths()
    pytest.importorskip("gradio", reason="gradio not installed (pip install -e '.[viewer]')")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from headforge.apps.viewer import launch_viewer
    from headforge.apps.viewer_engine import make_engine

    generator, _ = load_generator(_tiny_checkpoint(tmp_path / "run"))
    port = _free_port()
    export_dir = tmp_path / "exports"
    app = launch_viewer(make_engine(generator), port, block=False, export_dir=export_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
        driver.set_page_load_timeout(WAIT_S)
        wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.1)
        driver.get(f"http://127.0.0.1:{port}/")

        def status() -> str:
            return driver.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value") or ""

        def render_src() -> str | None:
            images = driver.find_elements(By.CSS_SELECTOR, "#render img")
            return images[0].get_attribute("src") if images else None

        def move_slider(elem_id: str, fraction: float) -> None:
            """Click the range track at ``fraction`` of its width, as a person would."""
            track = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=range]")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", track)
            offset = int((fraction - 0.5) * track.size["width"])
            ActionChains(driver).move_to_element_with_offset(track, offset, 0).click().perform()

        def after_move(elem_id: str, fraction: float, expected_stages: str) -> bytes:
            before_src, before_status = render_src(), status()
            move_slider(elem_id, fraction)
            wait.until(lambda _: status() != before_status and render_src() != before_src)
            assert f"ran {expected_stages} in" in status(), status()
            return _fetch(render_src())

        # The first image: everything built once.
        wait.until(lambda _: "ran build + render" in status() and render_src())
        first = _fetch(render_src())
        assert first.startswith(b"\x89PNG")

        # The light moves: only the lighting stages run, and the image changes.
        relit = after_move("light-azimuth", 0.72, "relight + render")
        assert relit != first
        sphere = driver.find_element(By.CSS_SELECTOR, "#light-sphere img").get_attribute("src")
        assert _fetch(sphere).startswith(b"\x89PNG")

        # The camera moves: the cached tri-planes are rendered again, nothing else.
        turned = after_move("yaw", 0.8, "render")
        assert turned not in (first, relit)

        # Animation: a slider for m[0] re-runs G_motion and the stages after it.
        animated = after_move("motion-0", 0.95, "reanimate + render")
        assert animated != turned

        if os.environ.get("HEADFORGE_UPDATE_DOCS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            driver.execute_script("window.scrollTo(0, 0);")
            assert driver.save_screenshot(str(SCREENSHOT))

        # A value out of range is refused by the server with a message, and nothing re-renders.
        seed_box = driver.find_element(By.CSS_SELECTOR, "#seed input")
        before_src = render_src()
        seed_box.clear()
        seed_box.send_keys("99999999999", Keys.ENTER)
        wait.until(lambda _: "seed must lie in [0, 2147483647]" in driver.page_source)
        assert render_src() == before_src

        # A new identity: typed and confirmed with Enter, everything is built again.
        before_status = status()
        seed_box.clear()
        seed_box.send_keys("5", Keys.ENTER)
        wait.until(lambda _: status() != before_status and render_src() != before_src)
        assert status().startswith("seed 5: ran build + render in"), status()

        # Random animation: the server draws a seed and sets the m sliders; G_motion onwards re-runs.
        # (An untrained model's deformations are tiny, so the pixels may not change: check the controls.)
        def sliders() -> list[str]:
            boxes = driver.find_elements(By.CSS_SELECTOR, "[id^=motion-] input[type=number]")
            return [box.get_attribute("value") for box in boxes]

        before_sliders, before_status = sliders(), status()
        driver.find_element(By.CSS_SELECTOR, "#random-animation").click()
        wait.until(lambda _: status() != before_status and "reanimate + render" in status())
        drawn = driver.find_element(By.CSS_SELECTOR, "#animation-seed input").get_attribute("value")
        assert int(float(drawn)) >= 1 and sliders() != before_sliders

        # The mesh export: a server-side file offered as a download.
        button = driver.find_element(By.CSS_SELECTOR, "#export-mesh")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        link = wait.until(lambda _: driver.find_elements(By.CSS_SELECTOR, "#mesh-file a[href*='.ply']"))
        assert _fetch(link[0].get_attribute("href")).startswith(b"ply")
        assert len(list(export_dir.glob("head-seed5-*.ply"))) == 1
    finally:
        if driver is not None:
            driver.quit()
        app.close()
