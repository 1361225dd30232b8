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


# -- a lean start: gevent only for verbs that reach hosts ----------------------------------------
HEAVY = ("gevent", "ssl", "socket", "requests", "paramiko", "pyinfra", "pydantic", "docker")


def _modules_after(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps("
                          f"{{m: m in sys.modules for m in {HEAVY!r}}}))"],
                         cwd="/tmp", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_registering_the_verbs_imports_nothing_heavy():
    assert _modules_after("import rig.cli") == {m: False for m in HEAVY}


def test_local_verbs_start_without_gevent_and_host_verbs_patch_before_ssl():
    code = ("import rig.cli\nfrom gevent import monkey\n"
            "print(rig.cli.patch_for_hosts('validate'), rig.cli.patch_for_hosts('tag'),"
            " monkey.is_module_patched('socket'))\n"
            "print(rig.cli.patch_for_hosts('rollout'), monkey.is_module_patched('socket'),"
            " monkey.is_module_patched('ssl'))")
    out = subprocess.run([sys.executable, "-c", code], cwd="/tmp", capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.splitlines() == ["False False False", "True True True"], out.stderr
    late = subprocess.run([sys.executable, "-c", "import ssl, rig.cli\n"
                           "rig.cli.patch_for_hosts('status')"], cwd="/tmp",
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 1 and "ssl was imported before gevent patched it" in late.stderr


def test_validate_run_as_the_operator_runs_it_never_loads_gevent_or_pyinfra():
    spec = str(REPO / "fleet.yml")
    code = (f"import sys\nsys.argv = ['rig', '-c', {spec!r}, 'validate']\nimport rig.cli\n"
            "try:\n    rig.cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")
    loaded = _modules_after(code)
    assert not loaded["gevent"] and not loaded["pyinfra"] and not loaded["paramiko"]
    assert loaded["pydantic"]          # it did validate


def test_an_explicit_tag_runs_no_git(monkeypatch, tmp_path):
    import rig.tags

    def no_git(repo):
        raise AssertionError("git ran")
    monkeypatch.setattr(rig.tags, "git_state", no_git)
    monkeypatch.delenv("FORCE_IMAGE_TAG", raising=False)
    assert rig.tags.current_tag(tmp_path, "20261130-0ab17ebd") == "20261130-0ab17ebd"
    monkeypatch.setenv("FORCE_IMAGE_TAG", "20261130-1a2b3c4d")
    assert rig.tags.current_tag(tmp_path) == "20261130-1a2b3c4d"
    monkeypatch.delenv("FORCE_IMAGE_TAG")
    with pytest.raises(AssertionError, match="git ran"):
        rig.tags.current_tag(tmp_path)


# -- output whose reader has gone never stops the work ---------------------------------------------
def test_output_to_a_reader_that_went_away_is_dropped_and_the_command_goes_on():
    """`rig rollout | head`, or a closed terminal: writes fail (EPIPE, EIO); a gate, rollback,
    ledger and lock release must still happen, so rig's echo drops the output instead."""
    code = ("import sys\nfrom rig.cli.common import echo, say_line\n"
            "for i in range(20000):\n    say_line(f'line {i} ' + 'x' * 60)\n"
            "echo('still here', err=True)\n")
    import shlex

    result = subprocess.run(f"{sys.executable} -c {shlex.quote(code)} | head -c 100 >/dev/null; "
                            "echo \"exit ${PIPESTATUS[0]}\" >&2",
                            shell=True, executable="/bin/bash", cwd="/tmp", capture_output=True,
                            text=True, timeout=60)
    assert result.stderr.splitlines() == ["still here", "exit 0"], result.stderr


def test_a_gate_display_that_cannot_write_does_not_stop_the_gate():
    from rig.rollout.gate import Probe
    from rig.rollout.watch import GateWatch

    def gone(line):
        raise BrokenPipeError(32, "Broken pipe")
    with GateWatch(gone, {("mainpc", "svc"): 330.0}, live=False) as watch:
        watch.probe("mainpc", "svc", Probe(20.0, "running", 0, 503, '{"status": "loading"}'))
        watch.probe("mainpc", "svc", Probe(40.0, "running", 0, 200, '{"status": "ok"}'))
    assert watch.rows[("mainpc", "svc")].answer == '200 {"status": "ok"}'

    class DeadTerminal:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            raise OSError(5, "Input/output error")
    import rich.live
    real = rich.live.Live
    rich.live.Live = DeadTerminal
    try:
        with GateWatch(gone, {("mainpc", "svc"): 330.0}, live=True) as watch:
            watch.probe("mainpc", "svc", Probe(20.0, "running", 0, 503, "{}"))
    finally:
        rich.live.Live = real
    assert watch._live is None


@pytest.mark.parametrize("args,words", [
    (["--driver", "abc"], "--driver 'abc': a driver version as nvidia-smi prints it"),
    (["--driver", "535.129.03, x"], "--driver '535.129.03, x': a driver version"),
    (["--driver", ""], "--driver '': a driver version"),
    (["--used-mib", "20000"], "--used-mib 20000: more than pc2's NVIDIA GeForce RTX 3060 has "
                              "(12288 MiB)")])
def test_lab_gpu_refuses_what_no_card_would_say_before_touching_the_lab(args, words):
    result = run_rig("-c", str(REPO / "fleet.yml"), "lab", "gpu", "pc2", *args)
    assert result.returncode == 1 and words in result.stderr, result.stderr


def test_rig_gpu_exits_1_when_a_gpu_hosts_card_does_not_answer(monkeypatch):
    import rig.ops.gpu
    from rig.ops.gpu import GpuRow

    rows = [GpuRow("mainpc", card="NVIDIA GeForce RTX 4090", driver=None, total_mib=24564,
                   used_mib=None),
            GpuRow("pc2", error="nvidia-smi failed: NVIDIA-SMI has failed")]
    monkeypatch.setattr(rig.ops.gpu, "gpu_status", lambda job, limit, say: rows)
    result = CliRunner().invoke(main, ["-c", str(REPO / "fleet.yml"), "--env", "lab", "gpu"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == ("mainpc     NVIDIA GeForce RTX 4090, driver ? (CUDA ?), "
                                             "? of 24564 MiB used")
    assert "pc2        no GPU answer: nvidia-smi failed: NVIDIA-SMI has failed" in result.output
    assert "no working GPU on pc2" in result.output
    rows.pop()
    assert CliRunner().invoke(main, ["-c", str(REPO / "fleet.yml"), "--env", "lab",
                                     "gpu"]).exit_code == 0


def test_the_build_and_image_verbs_never_load_pyinfra_or_paramiko():
    """They reach the registry and the local engine, never a host over SSH: pyinfra with
    paramiko is about 0.12 s of a no-change build's start."""
    loaded = _modules_after("import rig.ops.images, rig.ops.signing, rig.ops.job, rig.registry")
    assert not loaded["pyinfra"] and not loaded["paramiko"]
    assert loaded["pydantic"]
