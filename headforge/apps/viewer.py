"""`headforge viewer`: a local browser app to explore a trained generator.

NeRFFaceShop checkpoints get identity seed, animation (sliders for the leading
components of m plus a random-animation seed), SH lighting (light direction,
intensity, ambient, with a preview sphere) and camera; EG3D-style checkpoints
get seed and camera. Every control change goes through one handler that
validates the values (:func:`~headforge.apps.viewer_state.parse_settings`),
plans the cheapest control path from what changed
(:func:`~headforge.apps.viewer_state.plan_update`) and runs it on the
session's cached tri-planes (``gr.State``). Mesh (PLY) and orbit video (MP4)
exports are written to a server-chosen temporary folder and offered as
downloads; no path is ever taken from the browser.

The server binds 127.0.0.1 only, with gradio's analytics off.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from headforge.apps.viewer_engine import ViewerSession, display_image, make_engine
from headforge.apps.viewer_state import (
    ANIMATION_SOURCES,
    FLOAT_RANGES,
    INT_RANGES,
    ViewerInputError,
    parse_settings,
)

__all__ = ["HOST", "add_viewer_parser", "build_app", "launch_viewer", "run_viewer"]

#: The only address the viewer binds: it is a local tool, never a network service.
HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _import_gradio():
    """Import gradio with its usage analytics (and the update check tied to them) switched off."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    return gr


def _slider(gr, name: str, value: float, label: str, step: float, index: int | None = None):
    low, high = FLOAT_RANGES[name]
    elem_id = name.replace("_", "-") if index is None else f"{name}-{index}"
    return gr.Slider(low, high, value=value, step=step, label=label, elem_id=elem_id)


def _control_panel(gr, engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lay out identity, camera and lighting: the setting widgets by ViewSettings field, and the others.

    ``motion`` and ``expression`` map to lists of sliders. Groups a model lacks
    (animation and lighting for EG3D, head-model sliders without an encoder)
    are hidden; their widgets still send their defaults, which the plan ignores.
    """
    settings: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    seed_high = INT_RANGES["seed"][1]
    # Numbers carry no widget bounds: parse_settings checks every range with one message style.
    settings["seed"] = gr.Number(0, label=f"Identity seed (0 ... {seed_high})", elem_id="seed")
    settings["truncation"] = _slider(gr, "truncation", 0.7, "Truncation psi", 0.05)
    with gr.Accordion("Camera"):
        settings["yaw"] = _slider(gr, "yaw", 0.0, "Yaw (deg)", 1.0)
        settings["pitch"] = _slider(gr, "pitch", 0.0, "Pitch (deg)", 1.0)
    with gr.Accordion("Lighting", visible=engine.relightable):
        with gr.Row():
            settings["light_azimuth"] = _slider(gr, "light_azimuth", 0.0, "Light azimuth (deg)", 1.0)
            settings["light_elevation"] = _slider(gr, "light_elevation", 0.0, "Light elevation (deg)", 1.0)
        with gr.Row():
            settings["light_intensity"] = _slider(gr, "light_intensity", 0.5, "Light intensity", 0.05)
            settings["ambient"] = _slider(gr, "ambient", 0.5, "Ambient", 0.05)
        with gr.Row():
            settings["average_light"] = gr.Checkbox(
                False, label="Training-average light instead", elem_id="average-light"
            )
            extras["sphere"] = gr.Image(
                label="Light", interactive=False, elem_id="light-sphere", format="png", height=128, width=128
            )
    settings["display"] = gr.Radio(list(engine.displays), value="image", label="Show", elem_id="display")
    return settings, extras


def _animation_panel(gr, engine, settings: dict[str, Any], extras: dict[str, Any]) -> None:
    """Lay out the animation controls (latent sliders, random animation, head-model sliders)."""
    with gr.Accordion("Animation", visible=engine.animatable):
        settings["animation_source"] = gr.Radio(
            list(ANIMATION_SOURCES) if engine.expression_count else ["latent"],
            value="latent",
            label="Animation from (head_model: expression coefficients through the driving encoder)",
            visible=engine.expression_count > 0,
            elem_id="animation-source",
        )
        with gr.Row():
            settings["motion"] = [
                _slider(gr, "motion", 0.0, f"m[{i}]", 0.05, index=i) for i in range(engine.motion_count)
            ]
        with gr.Row():
            settings["animation_seed"] = gr.Number(
                0, label="Random animation seed (0: neutral)", elem_id="animation-seed"
            )
            extras["random_animation"] = gr.Button("Random animation", elem_id="random-animation")
        with gr.Row(visible=engine.expression_count > 0):
            settings["expression"] = [
                _slider(gr, "expression", 0.0, f"expression[{i}]", 0.05, index=i)
                for i in range(engine.expression_count)
            ]
            settings["jaw_open"] = _slider(gr, "jaw_open", 0.0, "Jaw opening (rad)", 0.01)


def build_app(engine, export_dir: Path, title: str = "headforge viewer"):
    """The gradio Blocks app for an engine (from :func:`~headforge.apps.viewer_engine.make_engine`).

    ``export_dir`` is where mesh and video exports are written (chosen by the
    server). Returns the ``gr.Blocks``; launch it with :func:`launch_viewer`.
    """
    gr = _import_gradio()
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        session_state = gr.State(None)  # a ViewerSession per browser session
        gr.Markdown(f"## {title}\n{type(engine.generator).__name__}: move a control to re-render.")
        with gr.Row():
            with gr.Column(scale=1):
                widgets, extras = _control_panel(gr, engine)
            with gr.Column(scale=1):
                view = gr.Image(label="Render", interactive=False, elem_id="render", format="png", height=320)
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                _animation_panel(gr, engine, widgets, extras)
                with gr.Row():
                    mesh_button = gr.Button("Export mesh (PLY)", elem_id="export-mesh")
                    video_button = gr.Button("Export orbit video (MP4)", elem_id="export-video")
                with gr.Row():
                    mesh_file = gr.File(label="Mesh", interactive=False, elem_id="mesh-file", height=90)
                    video_file = gr.File(
                        label="Orbit video", interactive=False, elem_id="video-file", height=90
                    )
        sphere = extras["sphere"]
        # One flat input list; read_settings regroups it by field name.
        layout = [(name, len(w) if isinstance(w, list) else None) for name, w in widgets.items()]
        controls = [c for w in widgets.values() for c in (w if isinstance(w, list) else [w])]

        def read_settings(values: tuple[Any, ...]):
            raw, position = {}, 0
            for name, count in layout:
                if count is None:
                    raw[name], position = values[position], position + 1
                else:
                    raw[name], position = list(values[position : position + count]), position + count
            try:
                return parse_settings(raw, engine.motion_count, engine.displays, engine.expression_count)
            except ViewerInputError as error:
                raise gr.Error(str(error)) from error

        def on_change(session: ViewerSession | None, *values):
            settings = read_settings(values)
            previous = session.settings if session is not None else None
            started = time.perf_counter()
            session = engine.update(session or ViewerSession(), settings)
            seconds = time.perf_counter() - started
            if previous == settings:
                # A repeated event (e.g. several sliders set at once): leave the page as it is.
                return session, gr.skip(), gr.skip(), gr.skip()
            ran = (
                " + ".join(stage.value for stage in session.last_stages)
                or f"nothing (cached {settings.display})"
            )
            sphere_image = engine.light_preview(settings)
            message = f"seed {settings.seed}: ran {ran} in {seconds:.2f} s"
            return session, display_image(session.passes, settings.display), sphere_image, message

        # Sliders, the checkbox and the radio re-render on change; the number boxes on Enter or on
        # leaving them, not at every keystroke (typing "123" would otherwise build three heads).
        numbers = (widgets["seed"], widgets["animation_seed"])
        triggers = [c.change for c in controls if c not in numbers] + [
            e for c in numbers for e in (c.submit, c.blur)
        ]
        update = dict(
            fn=on_change, inputs=[session_state, *controls], outputs=[session_state, view, sphere, status]
        )
        gr.on(triggers=triggers, trigger_mode="always_last", **update)
        app.load(**update)

        def on_random_animation():
            # The server draws the seed; its leading components go to the sliders, which re-render.
            drawn = secrets.randbelow(INT_RANGES["animation_seed"][1]) + 1
            return ["latent", drawn, *engine.random_motion_leading(drawn)]

        if engine.animatable:
            drawn = extras["random_animation"].click(
                on_random_animation,
                inputs=None,
                outputs=[widgets["animation_source"], widgets["animation_seed"], *widgets["motion"]],
            )
            drawn.then(**update)  # the slider changes also re-render; the plan makes the repeats free

        def require_session(session: ViewerSession | None) -> ViewerSession:
            if session is None or session.settings is None:
                raise gr.Error("nothing rendered yet: wait for the first image")
            return session

        def on_export_mesh(session: ViewerSession | None):
            session = require_session(session)
            path = export_dir / f"head-seed{session.settings.seed}-{secrets.token_hex(4)}.ply"
            path, level = engine.export_mesh(session, path)
            return str(path), f"mesh written ({path.name}, density level {level})"

        def on_export_video(session: ViewerSession | None):
            session = require_session(session)
            path = export_dir / f"orbit-seed{session.settings.seed}-{secrets.token_hex(4)}.mp4"
            engine.export_orbit(session, path)
            return str(path), f"orbit video written ({path.name})"

        mesh_button.click(on_export_mesh, inputs=[session_state], outputs=[mesh_file, status])
        video_button.click(on_export_video, inputs=[session_state], outputs=[video_file, status])
    return app


def launch_viewer(engine, port: int = DEFAULT_PORT, block: bool = True, export_dir: Path | None = None):
    """Build and serve the app on 127.0.0.1:``port``; with ``block=False`` return the running app.

    Exports go to ``export_dir`` or a fresh temporary folder. Close a
    non-blocking app with ``app.close()``.
    """
    gr = _import_gradio()
    export_dir = Path(export_dir or tempfile.mkdtemp(prefix="headforge-viewer-"))
    app = build_app(engine, export_dir)
    # System fonts only: the default theme would fetch web fonts, and the viewer works offline.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.queue(default_concurrency_limit=1)  # one CPU/GPU job at a time; events queue in order
    app.launch(
        server_name=HOST,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        allowed_paths=[str(export_dir)],
        ssr_mode=False,
        mcp_server=False,
        quiet=not block,
        theme=theme,
    )
    return app


def add_viewer_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``headforge viewer`` (runs :func:`run_viewer`)."""
    p = subparsers.add_parser(
        "viewer",
        help="interactive browser viewer of a trained model (127.0.0.1 only)",
        description="Serve a local gradio app: identity, animation, lighting and camera of a trained "
        "NeRFFaceShop model (seed and camera for EG3D), with mesh and orbit-video downloads.",
    )
    p.add_argument(
        "--ckpt", required=True, type=Path, help="checkpoint (.safetensors / .json / stem) or run folder"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--host",
        default=HOST,
        choices=[HOST],
        help="bind address: fixed to 127.0.0.1 (the viewer is never exposed to a network)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="optional NeRFFaceShop driving encoder (STEM.safetensors + STEM.json): adds head-model "
        "expression and jaw sliders",
    )
    p.set_defaults(run=run_viewer)
    return p


def run_viewer(args: argparse.Namespace) -> int:
    """Load ``args.ckpt`` and serve the viewer until interrupted."""

    from headforge.apps.loading import load_generator
    from headforge.runtime import default_device

    if args.host != HOST:
        raise ValueError(f"the viewer binds {HOST} only, not {args.host}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must lie in [1, 65535], got {args.port}")
    device = default_device(args.device)
    generator, _ = load_generator(args.ckpt, device)
    encoder = None
    if getattr(args, "encoder", None) is not None:
        from headforge.models.nerffaceshop_encoder import load_encoder

        encoder, _ = load_encoder(args.encoder, device)
    engine = make_engine(generator, device, encoder=encoder)
    print(f"headforge viewer: http://{HOST}:{args.port}")
    launch_viewer(engine, args.port, block=True)
    return 0
