"""`headforge eval`: metrics of datasets and checkpoints, reports, determinism, errors."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from headforge.data.studio.runner import run_synth
from headforge.eval import command
from headforge.eval.command import add_eval_parser
from headforge.eval.estimators.api import load_estimator
from headforge.eval.protocols import (
    group_ids_of_rows,
    identity_consistency,
    lighting_error,
    lighting_stability,
    parse_metrics,
    pose_distance,
    samples_from_dataset,
    samples_from_nerffaceshop,
)
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, preset
from headforge.training.launch import TrainRequest, train


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers())
    # Few KID rounds: each costs kernel matrices, and the tests check plumbing, not KID's variance.
    args = parser.parse_args(["eval", "--no-progress", "--kid-subsets", "5", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio") / "bench"
    run_synth("benchmark", 8, 32, 0, out, progress=False)
    return out


@pytest.fixture(scope="module")
def other_studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio1") / "bench"
    run_synth("benchmark", 4, 32, 1, out, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(studio: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("eg3d_run")
    train(TrainRequest(model="eg3d", data=studio, out=run, preset="tiny", kimg=0.004, progress=False))
    return run


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())


# -- metric functions against closed forms -----------------------------------------------


def test_pose_distance_closed_form_and_wrap() -> None:
    requested = torch.tensor([[0.0, 0.0, 0.0], [3.1, 0.0, 0.0]])
    estimated = torch.tensor([[0.3, 0.4, 1.2], [-3.1, 0.0, 0.0]])
    # Row 0: |(0.3, 0.4, 1.2)| = 1.3, without roll 0.5; row 1: 3.1 vs -3.1 is 2 pi - 6.2 apart.
    wrap = 2 * math.pi - 6.2
    assert pose_distance(requested, estimated) == pytest.approx((1.3 + wrap) / 2, abs=1e-6)
    no_roll = pose_distance(requested, estimated, include_roll=False)
    assert no_roll == pytest.approx((0.5 + wrap) / 2, abs=1e-6)


def test_identity_and_lighting_statistics_closed_form() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    identity = torch.tensor([0, 0, 1, 1])
    value, pairs, different = identity_consistency(embeddings, identity)
    # Same identity: cos = 1 and cos 45 deg; different: 0, 1/sqrt2, 0, 1/sqrt2.
    assert pairs == 2 and value == pytest.approx((1 + 0.5**0.5) / 2)
    assert different == pytest.approx(0.5**0.5 / 2)
    sh = torch.zeros(4, 9, 3)
    sh[1] += 2.0  # group 0 = {0, 1}: each coefficient 0 and 2 -> population std 1
    groups = torch.tensor([0, 0, 1, 1])
    assert lighting_stability(sh, groups) == (pytest.approx(0.5), 2)  # group 1 is constant: std 0
    assert math.isnan(lighting_stability(sh, torch.arange(4))[0])
    assert lighting_error(sh, sh + 0.5) == pytest.approx(0.25)
    assert group_ids_of_rows(torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0]])).tolist() == [1, 0, 1]


def test_bad_metric_name_is_a_clear_error(studio: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown metric.*fidd.*choose from fid, kid"):
        parse_metrics("fid,fidd")
    code = run_command(["--data", str(studio), "--metrics", "fid,fidd", "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "unknown metric(s) fidd" in capsys.readouterr().out
    assert not (tmp_path / "r.json").exists()


# -- datasets --------------------------------------------------------------------------------


def test_identical_datasets_give_zero_fid(studio: Path, other_studio: Path, tmp_path: Path) -> None:
    out = tmp_path / "self.json"
    assert run_command(["--data", str(studio), "--metrics", "fid,kid", "--out", str(out)]) == 0
    same = read_report(out)["metrics"]
    assert abs(same["fid"]["value"]) < 1e-6
    assert same["fid"]["network"] == "headforge-net"
    out = tmp_path / "other.json"
    assert (
        run_command(
            ["--data", str(studio), "--reference", str(other_studio), "--metrics", "fid", "--out", str(out)]
        )
        == 0
    )
    assert read_report(out)["metrics"]["fid"]["value"] > 1e-4


def test_capped_reference_is_spread_over_the_dataset(studio: Path) -> None:
    """--num-images on a reference reads items spread over the dataset, not its first few."""
    every = samples_from_dataset(str(studio), progress=False)
    first = samples_from_dataset(str(studio), 3, progress=False)
    spread = samples_from_dataset(str(studio), 3, progress=False, spread=True)
    assert torch.equal(first.images, every.images[:3])
    middles = [1, 4, 6]  # of three strata of 8 items
    assert torch.equal(spread.images, every.images[middles])
    assert torch.equal(spread.cameras, every.cameras[middles]) and torch.equal(spread.sh, every.sh[middles])
    capped_above = samples_from_dataset(str(studio), 99, progress=False, spread=True)
    assert torch.equal(capped_above.images, every.images)


def test_lighting_error_grows_with_label_perturbation(studio: Path, tmp_path: Path) -> None:
    """LE(delta) = mean((|r| + delta)^2) when each SH label moves by delta away from the estimate."""
    samples = samples_from_dataset(str(studio), progress=False)
    estimated = load_estimator("lighting")(samples.images)["sh"].double()
    residual = samples.sh.double() - estimated
    direction = torch.where(residual >= 0, 1.0, -1.0)
    document = json.loads((studio / "dataset.json").read_text())
    files = [name for name, _ in document["sh"]]
    values = []
    for delta in (0.0, 0.05, 0.2, 0.5):
        copy = tmp_path / f"perturbed_{delta}"
        shutil.copytree(studio, copy)
        perturbed = samples.sh.double() + delta * direction
        document["sh"] = [[name, perturbed[i].reshape(-1).tolist()] for i, name in enumerate(files)]
        (copy / "dataset.json").write_text(json.dumps(document))
        out = tmp_path / f"le_{delta}.json"
        assert run_command(["--data", str(copy), "--metrics", "le", "--out", str(out)]) == 0
        le = read_report(out)["metrics"]["le"]
        value = le["value"]
        # Baseline: MSE of answering the mean label = the labels' population variance.
        assert le["mean_light_baseline"] == pytest.approx(float(perturbed.var(dim=0, unbiased=False).mean()))
        expected = float(((residual.abs() + delta) ** 2).mean())
        assert value == pytest.approx(expected, rel=1e-4)
        values.append(value)
    assert values == sorted(values) and values[-1] > values[0] + 0.2


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_report_and_determinism(checkpoint: Path, studio: Path, tmp_path: Path) -> None:
    metrics = "fid,kid,apd,id,le,ls,aed"
    common = ["--ckpt", str(checkpoint), "--data", str(studio), "--preset", "cpu"]
    common += ["--identities", "3", "--views", "2"]
    outs = [tmp_path / "a" / "report.json", tmp_path / "b.json", tmp_path / "c.json"]
    assert run_command([*common, "--metrics", metrics, "--seed", "5", "--out", str(outs[0])]) == 0
    assert run_command([*common, "--metrics", metrics, "--seed", "5", "--out", str(outs[1])]) == 0
    assert run_command([*common, "--metrics", "fid", "--seed", "6", "--out", str(outs[2])]) == 0
    first, again, other = (read_report(path) for path in outs)
    assert list(first["metrics"]) == metrics.split(",")
    assert first["metrics"] == again["metrics"]
    assert first["metrics"]["fid"]["value"] != other["metrics"]["fid"]["value"]
    assert first["source"]["kind"] == "eg3d" and first["source"]["identities"] == 3
    for name in ("fid", "kid", "apd", "id"):
        assert math.isfinite(first["metrics"][name]["value"]), name
    assert first["metrics"]["apd"]["apd_no_roll"] <= first["metrics"]["apd"]["value"]
    assert first["metrics"]["id"]["pairs"] == 3  # one pair of views per identity
    # EG3D has no light or expression control: reported as missing, not invented.
    for name in ("le", "ls", "aed"):
        assert first["metrics"][name]["value"] is None and first["metrics"][name]["reliable"] is False
    table = outs[0].with_suffix(".md").read_text()
    for name in metrics.split(","):
        assert f"| {name} |" in table


def test_nerffaceshop_protocol_lights_groups_and_command(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny", num_coarse=6, num_fine=6)).eval()
    lights = samples_from_dataset(str(studio), progress=False).sh
    samples = samples_from_nerffaceshop(generator, lights, identities=2, views=2, seed=4, progress=False)
    assert samples.images.shape[0] == 4 and samples.sh.shape == (4, 9, 3)
    # Each identity keeps one light from the pool over its views and animations.
    for group in (0, 1):
        rows = samples.sh[samples.light_group == group]
        assert (rows == rows[0]).all() and (lights == rows[0]).all(dim=(1, 2)).any()
    again = samples_from_nerffaceshop(generator, lights, identities=2, views=2, seed=4, progress=False)
    assert torch.equal(samples.images, again.images)
    assert not torch.equal(samples.images[0], samples.images[1]), (
        "views or animations do not change the image"
    )

    monkeypatch.setattr(
        command, "load_generator", lambda *a, **k: (generator, {"config": {"model": "nerffaceshop"}})
    )
    out = tmp_path / "nfs.json"
    argv = ["--ckpt", "unused", "--data", str(studio), "--metrics", "le,ls,id,apd,aed", "--out", str(out)]
    assert run_command([*argv, "--identities", "2", "--views", "2"]) == 0
    report = read_report(out)["metrics"]
    assert report["le"]["value"] > 0 and report["ls"]["value"] >= 0 and report["ls"]["groups"] == 2
    assert report["id"]["pairs"] == 2 and report["aed"]["value"] is None
    assert run_command(["--ckpt", "unused", "--metrics", "le", "--out", str(out)]) == 2  # no lights


def test_eg3d_consistency_from_the_command(checkpoint: Path, tmp_path: Path) -> None:
    """TI / DS / MV through the CLI: EG3D has pose groups and paired views only; deterministic."""
    small = ["--preset", "cpu", "--consistency-identities", "2", "--poses", "2", "--mv-opacity", "0.05"]
    outs = [tmp_path / "eg3d_a.json", tmp_path / "eg3d_b.json"]
    for out in outs:
        argv = ["--ckpt", str(checkpoint), "--metrics", "ti,ds,mv", "--out", str(out), *small]
        assert run_command(argv) == 0
    first, again = (read_report(path) for path in outs)
    assert first["metrics"] == again["metrics"]
    report = first["metrics"]
    assert list(report) == ["ti", "ds_expression", "ds_pose", "ds_light", "mv"]
    assert first["source"]["kind"] == "eg3d-consistency" and first["source"]["identities"] == 2
    # EG3D cannot animate or relight: those are missing, not invented.
    for name in ("ti", "ds_expression", "ds_light"):
        assert report[name]["value"] is None and report[name]["reliable"] is False
    assert report["ds_pose"]["groups"] == 2 and report["mv"]["pairs"] == 2
    assert report["mv"]["value"] is not None and report["mv"]["value"] >= 0
    assert "| ds_pose |" in outs[0].with_suffix(".md").read_text()


def test_nerffaceshop_consistency_from_the_command(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = ["--preset", "cpu", "--consistency-identities", "2", "--poses", "2", "--mv-opacity", "0.05"]
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny", num_coarse=6, num_fine=6)).eval()
    monkeypatch.setattr(
        command, "load_generator", lambda *a, **k: (generator, {"config": {"model": "nerffaceshop"}})
    )
    out = tmp_path / "nfs.json"
    argv = ["--ckpt", "unused", "--data", str(studio), "--metrics", "le,ti,ds,mv", "--out", str(out)]
    argv += [*small, "--expressions", "2", "--lights", "2", "--identities", "1", "--views", "2"]
    assert run_command(argv) == 0
    document = read_report(out)
    report = document["metrics"]
    assert document["source"]["kind"] == "nerffaceshop"
    assert document["source"]["consistency"]["expressions"] == 2
    for name in ("ti", "ds_expression", "ds_pose", "ds_light", "mv"):
        assert report[name]["value"] is not None, name
    # The benchmark studio has one image per (identity, expression, camera, light): its TI groups are
    # the identities (shape constant), the estimator floor; DS is normalised by its variance.
    assert report["ti"]["reference_floor"] is not None
    assert "reference images" in report["ds_pose"]["note"]
    bad = ["--ckpt", "unused", "--data", str(studio), "--metrics", "ti", "--out", str(out), "--preset", "cpu"]
    assert run_command([*bad, "--lights", "0"]) == 2  # zero is an error, not "use the default"
