"""Runtime settings, secrets and checks in the spec: each mistake is one `file:line: field:
message`, and the layers (defaults < runtime < by_profile) resolve as documented."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rig.config import load_fleet
from rig.config.runtime import parse_size, show_size
from rig.errors import RigError, SpecError
from rig.secrets import SecretStore, service_secrets

REPO = Path(__file__).resolve().parents[2]
MOC = "services.model_ops_coordinator"
RUNTIME = "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}"
SIZES = "expected a size such as 512m, 8g or 1.5g (k, m, g: KiB, MiB, GiB) or a number of bytes"


@pytest.fixture
def spec(tmp_path, monkeypatch):
    shutil.copy(REPO / "fleet.yml", tmp_path / "fleet.yml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def replace(spec: Path, old: str, new: str) -> int:
    text = (spec / "fleet.yml").read_text()
    assert text.count(old) == 1, old
    (spec / "fleet.yml").write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


def errors() -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_fleet("fleet.yml")
    return caught.value.lines


@pytest.mark.parametrize("runtime, field, message", [
    ("memory: 12 GB", "memory", f"Value error, {SIZES}"),
    ("memory_reservation: 0", "memory_reservation", f"Value error, {SIZES}"),
    ("shm_size: -1", "shm_size", f"Value error, {SIZES}"),
    ("memory: 8GiB", "memory", f"Value error, {SIZES}"),
    ("cpus: 0", "cpus", "Input should be greater than 0"),
    ("pids: 5", "pids", "Input should be greater than or equal to 16"),
    ("ulimits: {nofile: {soft: 10, hard: 5}}", "ulimits.nofile",
     "Value error, soft limit 10 is above the hard limit 5"),
    ("ulimits: {files: 10}", "ulimits.files",
     "Input should be 'nofile', 'memlock', 'nproc', 'core', 'stack', 'fsize' or 'msgqueue'"),
    ("read_only: maybe", "read_only", "Input should be a valid boolean, unable to interpret input"),
    ("tmpfs: [tmp]", "tmpfs[0]", "Value error, 'tmp': expected an absolute path such as /tmp, "
     "or /tmp:size=256m"),
    ("cap_drop: [sys_admin]", "cap_drop[0]", "Value error, 'sys_admin': expected a capability "
     "such as NET_BIND_SERVICE (upper case), or ALL"),
    ("cap_drop: [NET_RAW], cap_add: [CAP_NET_RAW]", "cap_add", "NET_RAW is both dropped and added"),
    ("no_new_privileges: sometimes", "no_new_privileges",
     "Input should be a valid boolean, unable to interpret input"),
    ("gpus: some", "gpus", "Value error, expected all, none, or distinct device indices such as "
     "[0] or [0, 1]"),
    ("gpus: [1, 1]", "gpus", "Value error, expected all, none, or distinct device indices such "
     "as [0] or [0, 1]"),
    ("cache_volume: Big Cache", "cache_volume", "String should match pattern '^[a-z0-9][a-z0-9_.-]*$'"),
    ("stop_timeout: forever", "stop_timeout",
     "Value error, expected a duration such as 30s, 500ms or 2m"),
    ("memroy: 8g", "memroy", "Extra inputs are not permitted"),
])
def test_each_runtime_mistake_names_line_and_field(spec, runtime, field, message):
    line = replace(spec, RUNTIME, "    runtime: {" + runtime + "}")
    assert errors() == [f"fleet.yml:{line}: {MOC}.runtime.{field}: {message}"]


def test_defaults_and_by_profile_errors_have_lines(spec):
    line = replace(spec, "  memory: 4g\n", "  memory: lots\n")
    assert errors() == [f"fleet.yml:{line}: defaults.memory: Value error, {SIZES}"]
    replace(spec, "  memory: lots\n", "  memory: 4g\n")
    line = replace(spec, "      pc2: {memory: 6g, cpus: 4, shm_size: 1g}",
                   "      pc3: {memory: 6g, cpus: 4, shm_size: 1g}")
    assert errors() == [f"fleet.yml:{line}: {MOC}.by_profile.pc3: no host has profile 'pc3' "
                        "(profiles: mainpc, pc2)"]


@pytest.mark.parametrize("secret, field, message", [
    ("HF_TOKEN: {}", "HF_TOKEN", "Value error, a secret needs env: VARIABLE or file: PATH (or "
     "both: env first)"),
    ("HF-TOKEN: {env: HF_TOKEN}", "HF-TOKEN", "String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$'"),
    ("HF_TOKEN: {env: 'hf_abc123 value'}", "HF_TOKEN.env",
     "String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$'"),
    ("HF_TOKEN: {file: ../token}", "HF_TOKEN.file", "Value error, '../token' leaves the spec's folder"),
    ("HF_TOKEN: {value: hf_abc}", "HF_TOKEN.value", "Extra inputs are not permitted"),
])
def test_secret_mistakes(spec, secret, field, message):
    line = replace(spec, "      HF_TOKEN: {env: HF_TOKEN}", "      " + secret)
    assert errors() == [f"fleet.yml:{line}: {MOC}.secrets.{field}: {message}"]


@pytest.mark.parametrize("check, field, message", [
    ("{name: x, path: models}", "path", "String should match pattern "
     "'^/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*$'"),
    ("{name: x, path: /m, method: PUT}", "method", "Input should be 'GET', 'POST' or 'WS'"),
    ("{name: x, path: /m, method: WS}", "", "Value error, a WS check sends exactly one frame: "
     "send_hex or send_text"),
    ("{name: x, path: /m, body: {a: 1}}", "", "Value error, a body needs method: POST"),
    ("{name: x, path: /m, send_text: hi}", "", "Value error, send_hex and send_text are for method: WS"),
    ("{name: x, path: /m, method: WS, send_hex: xyz}", "send_hex",
     "String should match pattern '^([0-9a-f]{2}){1,4096}$'"),
    ("{name: x, path: /m, status: 99}", "status", "Input should be greater than or equal to 100"),
    ("{path: /m}", "name", "Field required"),
])
def test_check_mistakes(spec, check, field, message):
    old = "      - {name: lists the loaded models, path: /models, fields: [loaded, workers], gate: true}"
    line = replace(spec, old, "      - " + check)
    where = f"{MOC}.checks[0]" + (f".{field}" if field else "")
    assert errors() == [f"fleet.yml:{line}: {where}: {message}"]


def test_layers_resolve_later_wins_and_secure_by_default(spec):
    fleet = load_fleet("fleet.yml")
    main, pc2 = fleet.runtime("model_ops_coordinator", "mainpc"), fleet.runtime(
        "model_ops_coordinator", "pc2")
    assert (main.memory, pc2.memory) == (12 * 2**30, 6 * 2**30)      # runtime, then by_profile
    assert main.memory_reservation == pc2.memory_reservation == 512 * 2**20   # from defaults
    assert (main.read_only, main.tmpfs, main.cap_drop, main.cap_add, main.no_new_privileges) == (
        True, ["/tmp"], ["ALL"], [], True)                              # nothing set: SECURE
    assert {k: v.show() for k, v in main.ulimits.items()} == {"nofile": "65536",
                                                               "memlock": "unlimited"}
    assert main.gpus == "all" and fleet.runtime("affective_processing_center", "mainpc").gpus == "none"
    assert fleet.runtime("real_time_audio_pipeline", "pc2").gpus == [0]
    assert main.stop_timeout == 10 and fleet.runtime("real_time_audio_pipeline", "pc2").stop_timeout == 5


def test_sizes_round_trip():
    assert [parse_size(v) for v in ("512m", "8g", "1.5g", "64k", 1024, "2G")] == [
        512 * 2**20, 8 * 2**30, 3 * 2**29, 64 * 1024, 1024, 2 * 2**30]
    assert [show_size(v) for v in (8 * 2**30, 512 * 2**20, 65536, 1000)] == ["8g", "512m", "64k", "1000"]


def test_secrets_come_from_env_then_file_and_never_show(spec, monkeypatch):
    fleet = load_fleet("fleet.yml")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RigError) as caught:
        service_secrets(fleet, "model_ops_coordinator")
    assert str(caught.value) == (f"{MOC}.secrets.HF_TOKEN: not set: rig looked in the "
                                 "environment variable HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env\n")
    secret = SecretStore(fleet).of("model_ops_coordinator")["HF_TOKEN"]
    assert secret.value == "hf_from_env"
    assert "hf_from_env" not in repr(secret) + str(secret) + f"{secret}"


def test_secret_files_must_be_private(spec, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    replace(spec, "      HF_TOKEN: {env: HF_TOKEN}", "      HF_TOKEN: {env: HF_TOKEN, file: hf.txt}")
    fleet = load_fleet("fleet.yml")
    (spec / "hf.txt").write_text("hf_in_a_file\n")
    os.chmod(spec / "hf.txt", 0o644)
    with pytest.raises(RigError, match=r"hf.txt: secret file \(services.model_ops_coordinator.secrets"
                                       r".HF_TOKEN\) is readable by others \(mode 644\); chmod 600 it"):
        service_secrets(fleet, "model_ops_coordinator")
    os.chmod(spec / "hf.txt", 0o600)
    assert service_secrets(fleet, "model_ops_coordinator")["HF_TOKEN"].value == "hf_in_a_file"


# -- GPU memory as a budget ---------------------------------------------------------------------
def _spec_with(tmp_path, replacements: list[tuple[str, str]]):
    import shutil

    for name in ("fleet.yml", "profiles", "dockerfiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    text = (tmp_path / "fleet.yml").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    (tmp_path / "fleet.yml").write_text(text)
    return tmp_path / "fleet.yml", text


def test_gpu_memory_that_cannot_fit_on_pc2s_card_fails_validate_with_the_numbers(tmp_path):
    from rig.config import load_fleet

    path, text = _spec_with(tmp_path, [
        ("    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n",
         "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 18g}\n"),
        ("      pc2: {memory: 6g, cpus: 4, shm_size: 1g}\n",
         "      pc2: {memory: 6g, cpus: 4, shm_size: 1g, gpu_memory: 8g}\n"),
        ("      pc2: {memory: 3g, cpus: 2, gpus: [0]}",
         "      pc2: {memory: 3g, cpus: 2, gpus: [0], gpu_memory: 4g}")])
    with pytest.raises(RigError) as caught:
        load_fleet(path)
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if row.startswith("      pc2: {memory: 3g, cpus: 2, gpus: [0], gpu_memory: 4g}"))
    assert caught.value.lines == [
        f"{path}:{line}: services.real_time_audio_pipeline.by_profile.pc2.gpu_memory: host pc2 "
        "(NVIDIA GeForce RTX 3060, 12288 MiB): its GPU services declare model_ops_coordinator 8g + "
        "real_time_audio_pipeline 4g = 12288 MiB, more than the card's 12288 MiB less "
        "rollout.gpu_reserve 1024 MiB (11264 MiB)"]


def test_gpu_memory_that_fits_is_valid_and_changes_no_container(tmp_path):
    from rig.commands.container import container_config
    from rig.config import load_fleet

    path, _ = _spec_with(tmp_path, [
        ("    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n",
         "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 18g}\n"),
        ("      pc2: {memory: 6g, cpus: 4, shm_size: 1g}\n",
         "      pc2: {memory: 6g, cpus: 4, shm_size: 1g, gpu_memory: 8g}\n")])
    fleet = load_fleet(path)
    plain = load_fleet(REPO / "fleet.yml")
    assert fleet.runtime("model_ops_coordinator", "pc2").gpu_memory == 8 * 2**30
    assert container_config(fleet, "pc2", "model_ops_coordinator", "sha256:1", "p", {}) == \
        container_config(plain, "pc2", "model_ops_coordinator", "sha256:1", "p", {})


def test_gpu_settings_that_mean_nothing_on_a_host_fail_validate_at_their_line(tmp_path):
    from rig.config import load_fleet

    path, text = _spec_with(tmp_path, [
        ("    runtime: {memory: 2g, cpus: 2}\n", "    runtime: {memory: 2g, cpus: 2, gpu_memory: 30g}\n"),
        ("      pc2: {memory: 3g, cpus: 2, gpus: [0]}", "      pc2: {memory: 3g, cpus: 2, gpus: [3]}")])
    with pytest.raises(RigError) as caught:
        load_fleet(path)
    lines = text.splitlines()
    memory = next(i for i, r in enumerate(lines, 1) if "cpus: 2, gpu_memory: 30g}" in r)
    gpus = next(i for i, r in enumerate(lines, 1) if "gpus: [3]}" in r)
    assert sorted(caught.value.lines) == sorted([
        f"{path}:{memory}: services.affective_processing_center.runtime.gpu_memory: "
        "affective_processing_center declares gpu_memory but uses no GPU on host mainpc (gpu is "
        "false and gpus none): set gpu: true, or remove gpu_memory",
        f"{path}:{gpus}: services.real_time_audio_pipeline.by_profile.pc2.gpus: "
        "real_time_audio_pipeline: GPU 3 does not exist on host pc2, whose profile pc2 has 1 GPU "
        "(index 0)"])


@pytest.mark.parametrize("reserve,problem", [
    ("0", None), ("0m", None), ("12g", "leaves nothing"), ("13g", "leaves nothing"),
    ("-1", "expected 0, a size"), ("none", "expected 0, a size")])
def test_the_gpu_reserve_may_be_zero_and_one_as_big_as_the_card_is_named(tmp_path, reserve,
                                                                       problem):
    from rig.config import load_fleet

    path, _ = _spec_with(tmp_path, [
        ("rollout:\n", f"rollout:\n  gpu_reserve: {reserve}\n"),
        ("    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n",
         "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 1g}\n")])
    if problem is None:
        assert load_fleet(path).rollout.gpu_reserve == 0
        return
    with pytest.raises(RigError) as caught:
        load_fleet(path)
    assert problem in " ".join(caught.value.lines), caught.value.lines
    if problem == "leaves nothing":
        assert caught.value.lines[0].split(": ", 2)[1] == "rollout.gpu_reserve"
        assert "host pc2's NVIDIA GeForce RTX 3060 (12288 MiB)" in caught.value.lines[0]
