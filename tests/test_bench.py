"""`headforge bench --json`: the documented keys for each system, with positive timings."""

from __future__ import annotations

import json

import pytest

from headforge.cli import main


@pytest.mark.parametrize(
    ("model", "stages"),
    [
        ("eg3d", ("mapping", "synthesis", "rendering", "superresolution")),
        ("nerffaceshop", ("camera_only", "light_only", "animation_only")),
    ],
)
def test_bench_json_reports_stages_and_training(model: str, stages: tuple[str, ...], capsys) -> None:
    assert (
        main(
            ["bench", "--model", model, "--preset", "tiny", "--repeats", "1", "--train-batch", "2", "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == model and result["preset"] == "tiny"
    generate = result["generate"]
    for stage in (*stages, "full"):
        assert generate[f"{stage}_seconds"] > 0
    assert generate["seconds_per_image"] == generate["full_seconds"]
    train = result["train"]
    assert train["seconds_per_step"] > 0 and train["batch"] == 2
    # Lazy regularisers are amortised over their intervals.
    expected = sum(train["phase_seconds"][p] / train["phase_intervals"][p] for p in train["phase_seconds"])
    assert train["seconds_per_step"] == pytest.approx(expected)


def test_bench_unknown_preset_is_a_clear_error(capsys) -> None:
    assert main(["bench", "--model", "eg3d", "--preset", "nope", "--no-train"]) == 2
    assert "no preset 'nope'" in capsys.readouterr().err
