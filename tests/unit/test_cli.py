"""The CLI as an operator runs it: the installed `rig` console script, from outside the
checkout; and the spec read from disk once per command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import rig.config.loader
import rig.inventory
from rig.cli import main

REPO = Path(__file__).resolve().parents[2]
RIG = Path(sys.executable).with_name("rig")


def run_rig(*args, cwd="/tmp"):
    return subprocess.run([str(RIG), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_installed_console_script_works_from_any_directory():
    result = run_rig("-c", str(REPO / "fleet.yml"), "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{REPO / 'fleet.yml'} (production): valid")
    assert f"{REPO / 'fleet.yml'} + lab.yml (lab): valid" in result.stdout


def test_validate_checks_what_each_environment_runs_the_lab_overlay_included(tmp_path):
    import shutil

    for name in ("fleet.yml", "lab.yml", "profiles", "dockerfiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    lab = (tmp_path / "lab.yml").read_text().replace("  min_healthy", "  min_healthy")
    lab = lab.replace("defaults:\n  cpus: 1\n", "defaults:\n  cpus: lots\n", 1)
    (tmp_path / "lab.yml").write_text(lab)
    line = lab.splitlines().index("  cpus: lots") + 1
    result = run_rig("-c", str(tmp_path / "fleet.yml"), "validate")
    assert result.returncode == 1 and f"lab.yml:{line}: defaults.cpus" in result.stderr
    production = run_rig("-c", str(tmp_path / "fleet.yml"), "--env", "production", "validate")
    assert production.returncode == 0 and "(production): valid" in production.stdout


def test_the_installed_rig_is_not_the_checkout():
    """pip install . (not editable): the rig the tests import lives in the venv."""
    installed = Path(rig.__file__).resolve()
    assert "site-packages" in installed.parts
    assert installed.parent != REPO / "rig"


@pytest.mark.parametrize("verb", [[], ["rollout"], ["bootstrap"], ["lab", "up"], ["hosts", "trust"],
                                  ["build"], ["images", "verify"], ["status"], ["plan"],
                                  ["rollback"], ["verify"], ["validate"], ["gpu"],
                                  ["lab", "gpu"]])
def test_every_verb_explains_itself_with_an_example(verb):
    result = run_rig(*verb, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: rig" in result.stdout
    if verb and verb != ["lab", "up"]:
        assert "Example:" in result.stdout or "Typical flow" in result.stdout


def test_a_spec_error_is_one_line_per_problem_no_traceback(tmp_path):
    (tmp_path / "fleet.yml").write_text("registry: {}\n")
    result = run_rig("-c", str(tmp_path / "fleet.yml"), "validate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("rig: ")


def test_the_spec_is_read_from_disk_once_per_command(monkeypatch):
    calls: list[str] = []
    real = rig.config.loader.read_yaml

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rig.config.loader, "read_yaml", counting)
    result = CliRunner().invoke(main, ["-c", str(REPO / "fleet.yml"), "--env", "production",
                                       "build", "--print", "--tag", "T1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["target"]
    assert calls.count("fleet.yml") == 1
