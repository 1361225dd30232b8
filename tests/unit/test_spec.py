"""The spec loader: the real fleet loads, and each kind of mistake is named by file, line, field."""

import os
import shutil
from pathlib import Path

import pytest

from rig.config import load_fleet, load_profile
from rig.errors import SpecError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def spec(tmp_path, monkeypatch):
    """A copy of the real fleet.yml, lab.yml and profiles in a temp dir, cwd set there."""
    shutil.copy(REPO / "fleet.yml", tmp_path / "fleet.yml")
    shutil.copy(REPO / "lab.yml", tmp_path / "lab.yml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> int:
    """Replace `old` (which must occur once) and return the 1-based line it was on."""
    text = path.read_text()
    assert text.count(old) == 1, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    return line


def errors(*args, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_fleet(*args, **kwargs)
    return caught.value.lines


def test_real_fleet_loads():
    fleet = load_fleet(REPO / "fleet.yml")
    assert list(fleet.hosts) == ["mainpc", "pc2"]
    assert fleet.groups() == {"gpu": ["mainpc", "pc2"], "canary": ["mainpc"]}
    assert fleet.services["model_ops_coordinator"].port == 8212
    assert fleet.services["real_time_audio_pipeline"].port == 6557
    assert fleet.services["affective_processing_center"].port == 6560
    assert fleet.services["model_ops_coordinator"].health.expect == {"status": "ok"}
    assert fleet.services["model_ops_coordinator"].health.interval == 0.5
    assert fleet.profile_of("mainpc").cuda_arch == "8.9"
    assert fleet.profile_of("pc2").gpu.model == "NVIDIA GeForce RTX 3060"
    assert fleet.registry.token_env == "GHCR_TOKEN"
    assert fleet.gpu_enabled("mainpc") is True


def test_lab_overlay_changes_only_what_differs():
    prod = load_fleet(REPO / "fleet.yml")
    lab = load_fleet(REPO / "fleet.yml", REPO / "lab.yml")
    assert lab.registry.host == "10.77.0.1:5000"
    assert lab.registry.auth == "basic"
    assert lab.families["llm-cu121"].base_image == "10.77.0.1:5000/rig/lab-base:trixie"
    assert lab.families["llm-cu121"].context == prod.families["llm-cu121"].context
    assert lab.bootstrap.daemon.bridge == "none" and lab.bootstrap.daemon.iptables is False
    assert lab.bootstrap.daemon.log_max_size == prod.bootstrap.daemon.log_max_size
    assert lab.gpu_enabled("mainpc") is False       # no NVIDIA runtime: no --gpus
    assert lab.gpu_present("mainpc") is True        # the stand-in's GPU is read and checked
    assert lab.rollout == prod.rollout
    for name, service in prod.services.items():  # the lab has 2 cores and a stand-in token file
        same = {"runtime", "by_profile", "secrets"}
        assert lab.services[name].model_dump(exclude=same) == service.model_dump(exclude=same)
        assert lab.runtime(name, "pc2").memory == prod.runtime(name, "pc2").memory
        assert lab.runtime(name, "pc2").cpus <= 2 and lab.defaults.cpus == 1
    hf = lab.services["model_ops_coordinator"].secrets["HF_TOKEN"]
    assert (hf.env, hf.file) == ("HF_TOKEN", ".lab/secrets/HF_TOKEN")


def test_extra_hosts_join_groups_and_services():
    fleet = load_fleet(REPO / "fleet.yml", extra_hosts={"node3": {"profile": "pc2", "groups": ["gpu"]}})
    assert fleet.service_hosts("affective_processing_center") == ["mainpc", "pc2", "node3"]


def test_port_out_of_range_names_file_line_and_field(spec):
    line = edit(spec / "fleet.yml", "port: 8212", "port: 82120")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.model_ops_coordinator.port: "
        "Input should be less than or equal to 65535"
    ]


def test_unknown_key_is_rejected(spec):
    line = edit(spec / "fleet.yml", "    gpu: true\n    per_machine", "    gpus: true\n    per_machine")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.model_ops_coordinator.gpus: Extra inputs are not permitted"
    ]


def test_missing_field_points_at_its_parent(spec):
    line = edit(spec / "fleet.yml", "  real_time_audio_pipeline:\n    family: llm-cu121\n",
                "  real_time_audio_pipeline:\n")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.real_time_audio_pipeline.family: Field required"
    ]


def test_canary_must_be_a_host(spec):
    line = edit(spec / "fleet.yml", "canary: [mainpc]", "canary: [mainpc3]")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: rollout.canary[0]: canary host 'mainpc3' is not in hosts (mainpc, pc2)"
    ]


def test_family_must_exist(spec):
    text = (spec / "fleet.yml").read_text()
    start = text.index("  affective_processing_center:")
    line = text[:start].count("\n") + 2
    (spec / "fleet.yml").write_text(
        text[:start] + text[start:].replace("family: llm-cu121", "family: audio-cu121", 1)
    )
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.affective_processing_center.family: "
        "unknown family 'audio-cu121' (families: llm-cu121)"
    ]


def test_ports_must_not_clash_on_a_host(spec):
    line = edit(spec / "fleet.yml", "port: 6560", "port: 6557")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.affective_processing_center.port: "
        "port 6557 clashes with service 'real_time_audio_pipeline' on host 'mainpc'",
        f"fleet.yml:{line}: services.affective_processing_center.port: "
        "port 6557 clashes with service 'real_time_audio_pipeline' on host 'pc2'",
    ]


def test_service_hosts_must_resolve(spec):
    text = (spec / "fleet.yml").read_text()
    start = text.index("  affective_processing_center:")
    (spec / "fleet.yml").write_text(text[:start] + text[start:].replace("hosts: [gpu]", "hosts: [cpu]", 1))
    line = (spec / "fleet.yml").read_text().index("hosts: [cpu]")
    line = (spec / "fleet.yml").read_text()[:line].count("\n") + 1
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.affective_processing_center.hosts[0]: "
        "'cpu' is neither a host nor a group (canary, gpu, mainpc, pc2)"
    ]


def test_batch_shape(spec):
    line = edit(spec / "fleet.yml", "batch: 1 ", "batch: half ")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: rollout.batch: "
        "Value error, batch must be a count such as 2 or a percentage such as '50%'"
    ]


def test_batch_percentage_resolves_to_at_least_one_host(spec):
    edit(spec / "fleet.yml", "batch: 1 ", "batch: '50%' ")
    fleet = load_fleet("fleet.yml")
    assert [fleet.batch_size(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]


def test_duration_must_parse(spec):
    line = edit(spec / "fleet.yml", "min_healthy: 2s", "min_healthy: soon")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: rollout.min_healthy: "
        "Value error, expected a duration such as 30s, 500ms or 2m"
    ]


def test_token_is_a_variable_name_not_a_token(spec):
    line = edit(spec / "fleet.yml", "token_env: GHCR_TOKEN", "token_env: ghp-abc/123")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: registry.token_env: "
        "String should match pattern '^[A-Za-z_][A-Za-z0-9_]*$'"
    ]


def test_profile_error_names_the_profile_file(spec):
    line = edit(spec / "profiles" / "pc2.yml", "threads: 8", "threads: 0")
    assert errors("fleet.yml") == [
        f"{os.path.join('profiles', 'pc2.yml')}:{line}: threads: "
        "Input should be greater than or equal to 1"
    ]


def test_profile_gpu_and_arch_must_agree(spec):
    line = edit(spec / "profiles" / "mainpc.yml", 'cuda_arch: "8.9"', 'cuda_arch: "8.6"')
    assert errors("fleet.yml") == [
        f"{os.path.join('profiles', 'mainpc.yml')}:1: (top level): "
        "Value error, cuda_arch 8.6 does not match gpu.compute_cap 8.9"
    ]
    assert line > 1


def test_missing_profile_file(spec):
    line = edit(spec / "fleet.yml", "pc2: {profile: pc2,", "pc2: {profile: pc3,")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: hosts.pc2.profile: no profile file {os.path.join('profiles', 'pc3.yml')}"
    ]


def test_profile_name_must_match_file(spec):
    line = edit(spec / "profiles" / "pc2.yml", "name: pc2", "name: pc9")
    assert errors("fleet.yml") == [
        f"{os.path.join('profiles', 'pc2.yml')}:{line}: name: "
        "name 'pc9' does not match the file name 'pc2'"
    ]


def test_yaml_syntax_error_has_a_line(spec):
    line = edit(spec / "fleet.yml", "  batch: 1 ", "  batch: [1 ")
    (message,) = errors("fleet.yml")
    assert message.startswith("fleet.yml:") and "YAML:" in message
    assert int(message.split(":")[1]) >= line


def test_duplicate_keys_are_refused(spec):
    line = edit(spec / "fleet.yml", "  pc2: {profile: pc2", "  mainpc: {profile: pc2")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: YAML: duplicate key 'mainpc' (first on line {line - 1})"
    ]


def test_overlay_error_names_the_overlay(spec):
    line = edit(spec / "lab.yml", "auth: basic", "auth: kerberos")
    assert errors("fleet.yml", "lab.yml") == [
        f"lab.yml:{line}: registry.auth: Input should be 'token' or 'basic'"
    ]


def test_several_mistakes_are_all_reported_in_file_order(spec):
    first = edit(spec / "fleet.yml", "port: 8212", "port: 0")
    second = edit(spec / "fleet.yml", "stop_timeout: 10s", "stop_timeout: -1")
    assert errors("fleet.yml") == [
        f"fleet.yml:{first}: services.model_ops_coordinator.port: "
        "Input should be greater than or equal to 1",
        f"fleet.yml:{second}: rollout.stop_timeout: Input should be greater than or equal to 0",
    ]


def test_missing_file():
    assert errors("/nonexistent/fleet.yml") == ["/nonexistent/fleet.yml: file not found"]


def test_profile_hash_is_stable_and_content_sensitive(repo):
    a = load_profile(repo / "profiles" / "mainpc.yml")
    b = load_profile(repo / "profiles" / "mainpc.yml")
    assert a.content_hash() == b.content_hash()
    assert a.model_copy(update={"threads": 15}).content_hash() != a.content_hash()
    assert a.runtime_env() == {
        "RIG_MACHINE": "mainpc",
        "RIG_THREADS": "16",
        "RIG_WORKERS": "4",
        "OMP_NUM_THREADS": "16",
        "RIG_CUDA_ARCH": "8.9",
        "TORCH_CUDA_ARCH_LIST": "8.9",
    }
    assert a.build_env() == {"MACHINE": "mainpc", "CUDA_ARCH": "8.9"}


def test_an_empty_tag_is_a_bad_tag_not_no_tag():
    from datetime import UTC, datetime

    import pytest

    from rig.errors import RigError
    from rig.tags import resolve_tag

    with pytest.raises(RigError, match="--tag: '' is not a valid image tag"):
        resolve_tag("", {}, datetime.now(UTC), None)


def test_a_verbs_unknown_service_is_named_as_the_argument_it_came_from(fleet):
    import pytest

    from rig.errors import RigError
    from rig.ops.job import check_services

    with pytest.raises(RigError, match=r"^SERVICE: unknown service nosuch \(services: "):
        check_services(fleet, ["nosuch"], "SERVICE")


def test_a_slot_port_must_not_clash_with_another_services_port(spec):
    """Behind the proxy a service also takes 127.0.0.1:<port + 10000> and <port + 20000>."""
    line = edit(spec / "fleet.yml", "port: 6560", "port: 16557")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.affective_processing_center.port: "
        f"port 16557 clashes with slot a of service 'real_time_audio_pipeline' on host {h!r}"
        for h in ("mainpc", "pc2")]


def test_a_slot_port_above_65535_is_refused(spec):
    line = edit(spec / "fleet.yml", "port: 6560", "port: 50000")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.affective_processing_center.port: slot b of service "
        "'affective_processing_center' would listen on port 70000 (port 50000 + "
        "proxy.slot_offsets), above 65535: choose a lower port or offsets"]   # said once
