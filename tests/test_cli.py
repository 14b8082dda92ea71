"""Every `headforge` subcommand answers --help; bad input is a clear error, not a traceback."""

from __future__ import annotations

import argparse

import pytest

from headforge.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_expected_commands_exist() -> None:
    expected = {"train", "generate", "video", "mesh", "bench", "synth", "demo", "drive", "finetune-domain"}
    expected |= {"train-driver", "viewer", "preprocess", "train-estimators", "eval"}
    assert expected <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: headforge" in capsys.readouterr().out


def test_missing_checkpoint_is_reported(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--ckpt", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_missing_dataset_is_reported(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "absent" in capsys.readouterr().err
