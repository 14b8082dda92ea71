"""Writing an evaluation report: JSON plus a Markdown table next to it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "write_report"]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def markdown_table(report: dict[str, Any]) -> str:
    """One row per metric: value, reliable or not, note (estimator warnings, what was compared).

    An optional ``report["legend"]`` (metric -> one line) is listed under the table.
    """
    lines = [
        "# headforge eval",
        "",
        f"source: `{json.dumps(report['source'])}`",
        "",
        "| metric | value | reliable | note |",
        "|---|---|---|---|",
    ]
    for name, entry in report["metrics"].items():
        value = entry.get("value", float("nan"))
        reliable = "yes" if entry.get("reliable", True) else "**no**"
        note = str(entry.get("note", "")).replace("|", "/")
        lines.append(f"| {name} | {_format(value)} | {reliable} | {note} |")
    legend = report.get("legend", {})
    if legend:
        lines += ["", "## Legend", ""]
        lines += [f"- **{name}**: {text}" for name, text in legend.items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (JSON; NaN written as null) and ``path`` with suffix ``.md``; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    path.write_text(json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
    markdown = path.with_suffix(".md")
    markdown.write_text(markdown_table(report))
    return path, markdown
