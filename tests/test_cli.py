"""drconv-yolo: own subcommands dispatch to their modules; anything else goes to Ultralytics after registering."""

import os

import pytest

from drconv_yolo import cli, plugin


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert f"drconv-yolo {name}" in out


def test_prepare_synthetic_writes_dataset_yaml(tmp_path, capsys):
    assert (
        cli.main(["prepare", "synthetic", str(tmp_path / "syn"), "--n-train", "3", "--n-val", "2", "--imgsz", "64"])
        == 0
    )
    assert (tmp_path / "syn" / "synthetic.yaml").exists()
    assert len(list((tmp_path / "syn" / "labels" / "train").glob("*.txt"))) == 3


def test_unknown_subcommand_registers_then_hands_argv_to_ultralytics(monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.cfg
    import ultralytics.utils

    seen = {}
    monkeypatch.setattr(ultralytics.cfg, "entrypoint", lambda: seen.update(argv=list(ultralytics.utils.ARGV)))
    argv = ["pytest"]
    monkeypatch.setattr("sys.argv", argv)  # cli edits sys.argv in place: Ultralytics holds the same list as ARGV
    monkeypatch.setattr(ultralytics.utils, "ARGV", argv)
    plugin.unregister()
    try:
        assert not plugin.is_registered()
        assert cli.main(["train", "model=yolov8n-drconv.yaml", "data=my data.yaml"]) == 0
        assert plugin.is_registered()
    finally:
        plugin.register()
    assert seen["argv"] == ["yolo", "train", "model=yolov8n-drconv.yaml", "data=my data.yaml"]


def test_prepare_with_missing_source_fails_with_message(tmp_path, capsys):
    code = cli.main(["prepare", "visdrone", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert code != 0
    assert "nope" in capsys.readouterr().err


def test_make_test_commands_use_a_temporary_ultralytics_settings_folder(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parents[1]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no YOLO_CONFIG_DIR inherited from this process
    out = subprocess.run(["make", "-s", "--no-print-directory", "test-env"], cwd=repo, env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    assert out and Path(out).is_dir() and not Path(out).is_relative_to(tmp_path)
    assert not (tmp_path / ".config").exists()
