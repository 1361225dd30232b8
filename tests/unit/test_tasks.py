"""Facts and operations as data, in pyinfra's style: recorded fact output in, commands out.

Covers the paths the lab cannot reach (docker-ce repository, buildx binary URL, NVIDIA toolkit,
real GPUs) with recorded nvidia-smi outputs for a 4090, a 3060 and no GPU."""

import json
from pathlib import Path

import pytest
from pyinfra.api import FunctionCommand
from pyinfra.context import ctx_host

from rig.commands import host as cmd
from rig.config import load_fleet
from rig.hosts import release_problem
from tasks import docker as docker_ops
from tasks import nvidia as nvidia_ops
from tasks import profile as profile_ops
from tasks.facts import HostFacts, HostState, NvidiaGpus, parse_host_facts

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
PROD = load_fleet(REPO / "fleet.yml")
LAB = load_fleet(REPO / "fleet.yml", REPO / "lab.yml")


def recorded(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def gpu_fact(name: str) -> list:
    """The NvidiaGpus fact on a recorded nvidia-smi answer (its # source lines left out)."""
    return NvidiaGpus().process([line for line in recorded(name) if not line.startswith("#")])


class FakeData(dict):
    __getattr__ = dict.get


class _RunState:
    """Stands for pyinfra's State: tasks key their per-run fact cache on it."""


class FakeHost:
    """Just enough of pyinfra's host for an operation body: facts, data, noop."""

    def __init__(self, facts: HostFacts, fleet=LAB, name="mainpc", gpus=None):
        self.name = name
        self.data = FakeData(rig_fleet=fleet, rig_host=name)
        self._facts = {HostState: facts, NvidiaGpus: gpus or []}
        self.noops: list[str] = []
        self.state = _RunState()  # the key of tasks' HostState cache for the run

    def get_fact(self, fact, **kwargs):
        return self._facts[fact]

    def noop(self, message):
        self.noops.append(message)


def run_op(op, fake: FakeHost, **kwargs) -> list:
    with ctx_host.use(fake):
        return list(op._inner(**kwargs))


def bare() -> HostFacts:
    return parse_host_facts(recorded("hoststate-bare-trixie.txt"))


def ready() -> HostFacts:
    return parse_host_facts(recorded("hoststate-ready-trixie.txt"))


# -- facts ------------------------------------------------------------------------------------
def test_host_facts_parse_a_bare_host():
    facts = bare()
    assert (facts.os_id, facts.os_version, facts.os_codename) == ("debian", "13", "trixie")
    assert facts.apt_based and facts.packages == {} and not facts.docker_active
    assert facts.buildx_version is None and facts.login_hash is None
    assert facts.file_hashes["/etc/docker/daemon.json"] is None
    assert facts.users == ["ops"] and facts.docker_group == []


def test_host_facts_parse_a_ready_host():
    facts = ready()
    assert facts.packages["docker.io"] == "26.1.5+dfsg1-9+deb13u1+b1"
    assert facts.docker_active and facts.docker_enabled
    assert facts.buildx_version == "0.13.1"
    assert facts.file_hashes["/etc/docker/daemon.json"] == "1f0d"
    assert facts.docker_group == ["ops"] and facts.login_hash == "abc"


def test_buildx_version_from_docker_ce_format():
    facts = parse_host_facts(["buildx=github.com/docker/buildx v0.17.1 257815a"])
    assert facts.buildx_version == "0.17.1"


@pytest.mark.parametrize("fixture, expected", [
    ("gpu/smi-gpu-query-4090.txt", [("NVIDIA GeForce RTX 4090", "8.9", 24564)]),
    ("gpu/smi-gpu-query-3060.txt", [("NVIDIA GeForce RTX 3060", "8.6", 12288)]),
    ("gpu/smi-no-driver.txt", []),
])
def test_gpu_fact_parses_recorded_nvidia_smi(fixture, expected):
    assert [(g.name, g.compute_cap, g.memory_total_mib) for g in gpu_fact(fixture)] == expected


def test_gpu_matching_profile_passes():
    gpus = gpu_fact("gpu/smi-gpu-query-4090.txt")
    assert nvidia_ops.gpu_problem(gpus, PROD.profile_of("mainpc")) is None


def test_a_3060_where_the_profile_says_4090_is_refused():
    gpus = gpu_fact("gpu/smi-gpu-query-3060.txt")
    assert nvidia_ops.gpu_problem(gpus, PROD.profile_of("mainpc")) == (
        "GPU mismatch: profile mainpc expects NVIDIA GeForce RTX 4090 (compute 8.9), "
        "found NVIDIA GeForce RTX 3060 (compute 8.6)"
    )


def test_no_gpu_where_the_profile_has_one_is_refused():
    assert nvidia_ops.gpu_problem([], PROD.profile_of("pc2")) == (
        "no GPU found by nvidia-smi; profile pc2 expects NVIDIA GeForce RTX 3060"
    )


# -- daemon.json ------------------------------------------------------------------------------
def test_daemon_json_for_the_lab():
    """No default bridge, no iptables and no IP forwarding in the lab's inner engines (rig's
    own bridge network reaches the host's proxy and nothing beyond); without iptables only
    docker-proxy publishes a port; icc is left to dockerd (it refuses icc: false without
    iptables); the other CIS settings as everywhere."""
    assert cmd.daemon_json(LAB.bootstrap.daemon, nvidia=False) == (
        '{\n  "bridge": "none",\n  "ip-forward": false,\n  "iptables": false,\n'
        '  "live-restore": true,\n'
        '  "log-driver": "json-file",\n  "log-opts": {\n    "max-file": "3",\n'
        '    "max-size": "10m"\n  },\n  "no-new-privileges": true,\n  "userland-proxy": true\n}\n'
    )


def test_daemon_json_follows_the_cis_docker_benchmark_where_the_engine_allows():
    content = json.loads(cmd.daemon_json(PROD.bootstrap.daemon, nvidia=False))
    assert (content["icc"], content["userland-proxy"], content["no-new-privileges"]) == (
        False, False, True)


def test_daemon_json_on_a_gpu_host_carries_the_nvidia_runtime():
    content = cmd.daemon_json(PROD.bootstrap.daemon, nvidia=True)
    assert '"default-runtime": "nvidia"' in content
    assert '"path": "nvidia-container-runtime"' in content
    assert '"bridge"' not in content


def test_daemon_config_unchanged_is_a_noop():
    content = cmd.daemon_json(LAB.bootstrap.daemon, False)
    facts = ready()
    facts.file_hashes["/etc/docker/daemon.json"] = cmd.sha256(content)
    fake = FakeHost(facts)
    assert run_op(docker_ops.daemon_config, fake, content=content) == []
    assert fake.noops == ["daemon.json is up to date"]


def test_daemon_config_change_restarts_a_running_engine_once():
    content = cmd.daemon_json(LAB.bootstrap.daemon, False)
    commands = run_op(docker_ops.daemon_config, FakeHost(ready()), content=content)
    assert commands == [cmd.write_file("/etc/docker/daemon.json", content, "0644"),
                        "systemctl restart docker"]


def test_daemon_config_before_install_does_not_restart():
    content = cmd.daemon_json(LAB.bootstrap.daemon, False)
    commands = run_op(docker_ops.daemon_config, FakeHost(bare()), content=content)
    assert commands == [cmd.write_file("/etc/docker/daemon.json", content, "0644")]


def test_write_file_is_one_atomic_command():
    assert cmd.write_file("/etc/rig/x.json", "{}\n", "0644") == (
        "install -d -m 0755 /etc/rig && printf %s e30K | base64 -d > /etc/rig/x.json.rig-tmp "
        "&& chmod 0644 /etc/rig/x.json.rig-tmp && mv -T /etc/rig/x.json.rig-tmp /etc/rig/x.json"
    )


# -- engine and buildx ------------------------------------------------------------------------
def test_distro_engine_on_debian_13_names_docker_cli():
    packages = cmd.engine_packages(LAB, "debian", "13")
    assert packages == {"docker.io": None, "docker-cli": None, "docker-buildx": None}
    assert cmd.engine_packages(LAB, "ubuntu", "22.04") == {"docker.io": None,
                                                          "docker-buildx": None}


def test_engine_packages_install_what_is_missing():
    packages = cmd.engine_packages(LAB, "debian", "13")
    commands = run_op(docker_ops.engine_packages, FakeHost(bare()), packages=packages,
                      repo_commands=[])
    assert commands == [
        "DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "docker.io docker-cli docker-buildx",
    ]


def test_engine_packages_present_is_a_noop():
    fake = FakeHost(ready())
    packages = cmd.engine_packages(LAB, "debian", "13")
    assert run_op(docker_ops.engine_packages, fake, packages=packages, repo_commands=[]) == []
    assert fake.noops == ["installed: docker.io, docker-cli, docker-buildx"]


def docker_ce_fleet():
    bootstrap = PROD.bootstrap.model_copy(update={
        "docker": PROD.bootstrap.docker.model_copy(update={
            "source": "docker-ce", "version": "5:27.3.1-1~ubuntu.22.04~jammy"}),
        "buildx": PROD.bootstrap.buildx.model_copy(update={"source": "docker-ce"}),
    })
    return PROD.model_copy(update={"bootstrap": bootstrap})


def test_docker_ce_repository_is_added_with_a_checked_key():
    fleet = docker_ce_fleet()
    repo = cmd.docker_ce_repo(fleet.bootstrap.docker.repo_url, "ubuntu", "jammy")
    assert repo[2] == ("curl -fsSL https://download.docker.com/linux/ubuntu/gpg "
                       "-o /etc/apt/keyrings/docker.asc.new")
    assert "9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in repo[3]
    assert repo[5] == ("echo 'deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
                       "https://download.docker.com/linux/ubuntu jammy stable' "
                       "> /etc/apt/sources.list.d/docker.list")


def test_docker_ce_wrong_version_is_replaced_at_the_pin():
    fleet = docker_ce_fleet()
    facts = ready()
    facts.packages.update({"docker-ce": "5:26.0.0-1~ubuntu.22.04~jammy",
                           "docker-ce-cli": "5:27.3.1-1~ubuntu.22.04~jammy",
                           "containerd.io": "1.7.22-1"})
    packages = cmd.engine_packages(fleet, "ubuntu", "22.04")
    assert packages == {"docker-ce": "5:27.3.1-1~ubuntu.22.04~jammy",
                        "docker-ce-cli": "5:27.3.1-1~ubuntu.22.04~jammy",
                        "containerd.io": None, "docker-buildx-plugin": None}
    commands = run_op(docker_ops.engine_packages, FakeHost(facts, fleet), packages=packages,
                      repo_commands=["REPO"])
    assert commands == [
        "REPO",
        "DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "'docker-ce=5:27.3.1-1~ubuntu.22.04~jammy' docker-buildx-plugin",
    ]


SHA = "a" * 64


def test_buildx_binary_installs_a_checked_binary():
    url = "https://mirror.internal/buildx-v0.17.1.linux-amd64"
    commands = run_op(docker_ops.buildx_binary, FakeHost(ready()), url=url, sha256=SHA,
                      version="v0.17.1")
    assert commands == [
        "install -m 0755 -d /usr/local/lib/docker/cli-plugins",
        f"curl -fsSL {url} -o /usr/local/lib/docker/cli-plugins/docker-buildx.new",
        f"echo '{SHA}  /usr/local/lib/docker/cli-plugins/docker-buildx.new' | sha256sum -c "
        "--quiet || { echo 'buildx sha256 mismatch' >&2; "
        "rm -f /usr/local/lib/docker/cli-plugins/docker-buildx.new; exit 1; }",
        "chmod 0755 /usr/local/lib/docker/cli-plugins/docker-buildx.new && "
        "mv /usr/local/lib/docker/cli-plugins/docker-buildx.new "
        "/usr/local/lib/docker/cli-plugins/docker-buildx",
    ]


def test_buildx_binary_at_the_right_version_is_a_noop():
    facts = ready()
    facts.buildx_version = "0.17.1"
    assert run_op(docker_ops.buildx_binary, FakeHost(facts), url="u", sha256=SHA,
                  version="v0.17.1") == []


def test_engine_service_started_when_inactive():
    assert run_op(docker_ops.engine_service, FakeHost(bare())) == ["systemctl enable --now docker"]
    assert run_op(docker_ops.engine_service, FakeHost(ready())) == []


# -- registry -------------------------------------------------------------------------------
def test_login_with_current_token_is_a_noop():
    facts = ready()
    facts.login_hash = cmd.registry_auth_hash("rig", "s3cret-token")
    fake = FakeHost(facts)
    assert run_op(docker_ops.registry_login, fake, registry="10.77.0.1:5000", username="rig",
                  token="s3cret-token") == []
    assert fake.noops == ["logged in to 10.77.0.1:5000 as rig"]


def test_login_feeds_the_token_on_stdin_never_in_the_command():
    (command,) = run_op(docker_ops.registry_login, FakeHost(bare()), registry="ghcr.io",
                        username="haymayndzultra", token="ghp-not-a-real-token")
    assert isinstance(command, FunctionCommand)
    shell, stdin, _ = command.args
    assert shell == "docker login --username haymayndzultra --password-stdin ghcr.io"
    assert stdin == "ghp-not-a-real-token" and "ghp-not" not in repr(command.args[0])


def test_stale_login_is_redone():
    facts = ready()
    facts.login_hash = cmd.registry_auth_hash("rig", "old-token")
    assert len(run_op(docker_ops.registry_login, FakeHost(facts), registry="r", username="rig",
                      token="new-token")) == 1


def test_registry_ca_only_when_different():
    facts = bare()
    path = "/etc/docker/certs.d/10.77.0.1:5000/ca.crt"
    assert run_op(docker_ops.registry_trust, FakeHost(facts), ca_pem="PEM", path=path) == [
        cmd.write_file(path, "PEM", "0444")]
    facts.file_hashes[path] = cmd.sha256("PEM")
    assert run_op(docker_ops.registry_trust, FakeHost(facts), ca_pem="PEM", path=path) == []


def test_deploy_user_joins_the_docker_group():
    assert run_op(docker_ops.docker_group_member, FakeHost(bare()), user="ops") == [
        "usermod -aG docker ops"]
    assert run_op(docker_ops.docker_group_member, FakeHost(ready()), user="ops") == []


def test_missing_deploy_user_stops_the_host():
    assert run_op(docker_ops.docker_group_member, FakeHost(bare()), user="ghost") == [
        "echo 'rig: deploy_user '\"'\"'ghost'\"'\"' does not exist on this host' >&2; exit 1"]


# -- NVIDIA (production fleet: GPU hosts) ------------------------------------------------------
def test_nvidia_toolkit_from_nvidias_repository():
    commands = run_op(nvidia_ops.toolkit, FakeHost(bare(), PROD),
                      repo_url="https://nvidia.github.io/libnvidia-container")
    assert commands == [
        "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor --yes "
        "-o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
        "curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/"
        "nvidia-container-toolkit.list | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/"
        "nvidia-container-toolkit-keyring.gpg] https://#g' > "
        "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
        "DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "nvidia-container-toolkit",
    ]


def test_gpu_check_op_stops_a_mismatched_host():
    fake = FakeHost(ready(), PROD, gpus=gpu_fact("gpu/smi-gpu-query-3060.txt"))
    (command,) = run_op(nvidia_ops.gpu_matches_profile, fake)
    assert command.startswith("echo 'rig: GPU mismatch: profile mainpc expects") and command.endswith(
        ">&2; exit 1")


def test_gpu_check_op_passes_a_matching_host():
    fake = FakeHost(ready(), PROD, name="pc2", gpus=gpu_fact("gpu/smi-gpu-query-3060.txt"))
    assert run_op(nvidia_ops.gpu_matches_profile, fake) == []
    assert fake.noops == ["GPU matches the machine profile"]


def test_gpu_smoke_command():
    assert cmd.gpu_smoke("nvidia/cuda:12.1.1-base-ubuntu22.04") == (
        "docker run --rm --gpus all nvidia/cuda:12.1.1-base-ubuntu22.04 nvidia-smi")


# -- machine profile ------------------------------------------------------------------------
def test_profile_files_render_json_env_and_hash():
    profile = PROD.profile_of("pc2")
    files = profile_ops.profile_files(profile)
    digest = profile.content_hash()
    assert files[cmd.PROFILE_HASH] == digest + "\n"
    assert files[cmd.PROFILE_ENV] == (
        "OMP_NUM_THREADS=8\nRIG_CUDA_ARCH=8.6\nRIG_MACHINE=pc2\nRIG_THREADS=8\nRIG_WORKERS=2\n"
        f"TORCH_CUDA_ARCH_LIST=8.6\nRIG_PROFILE_HASH={digest}\n"
    )
    assert '"cuda_arch": "8.6"' in files[cmd.PROFILE_JSON]


def test_only_stale_profile_files_are_written():
    files = profile_ops.profile_files(PROD.profile_of("pc2"))
    facts = bare()
    facts.file_hashes.update({p: cmd.sha256(c) for p, c in files.items()})
    facts.file_hashes[cmd.PROFILE_ENV] = "old"
    assert run_op(profile_ops.machine_profile, FakeHost(facts), files=files) == [
        cmd.write_file(cmd.PROFILE_ENV, files[cmd.PROFILE_ENV], "0644")]


# -- pre-flight -------------------------------------------------------------------------------
@pytest.mark.parametrize("lines, problem", [
    (["os_id=debian", "os_version=13", "apt=1"], None),
    (["os_id=ubuntu", "os_like=debian", "os_version=22.04", "apt=1"], None),
    (["os_id=debian", "os_version=", "apt=1"], None),
    (["os_id=ubuntu", "os_like=debian", "os_version=20.04", "apt=1"],
     "ubuntu 20.04 is not supported (need ubuntu 22 or newer)"),
    (["os_id=debian", "os_version=11", "apt=1"], "debian 11 is not supported (need debian 12 or newer)"),
    (["os_id=fedora", "os_version=40", "apt=0"],
     "not an apt-based system (ID=fedora); rig bootstraps Debian and Ubuntu"),
])
def test_release_checks(lines, problem):
    assert release_problem(parse_host_facts(lines)) == problem


@pytest.mark.parametrize("active, enabled, socket, restarted", [
    (True, True, True, False),
    (True, True, False, True),     # its admin socket file removed: only a restart binds it
    (False, True, True, True),     # stopped, or failed too often: reset, then started
    (True, False, True, True),
])
def test_haproxy_runs_enabled_with_rigs_admin_socket(active, enabled, socket, restarted):
    from tasks import proxy as proxy_ops

    facts = ready()
    facts.haproxy_active, facts.haproxy_enabled, facts.haproxy_socket = active, enabled, socket
    fake = FakeHost(facts)
    assert run_op(proxy_ops.proxy_service, fake) == ([
        "systemctl enable haproxy", "systemctl reset-failed haproxy 2>/dev/null || true",
        "systemctl restart haproxy"] if restarted else [])
    assert fake.noops == ([] if restarted else ["haproxy is enabled and running"])


def test_the_host_fact_reads_whether_rigs_admin_socket_is_there():
    from rig.commands.facts import host_facts_command

    line = host_facts_command([], "r", [])
    assert ("if [ -S /run/haproxy-rig-admin.sock ]; then echo haproxy_socket=1; else echo "
            "haproxy_socket=0; fi") in line
    assert parse_host_facts(["haproxy_socket=1"]).haproxy_socket
    assert not parse_host_facts(["haproxy_socket=0"]).haproxy_socket
