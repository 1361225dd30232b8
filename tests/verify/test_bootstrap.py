"""A bootstrapped host: engine, buildx, daemon.json, registry, group, machine profile."""

import json
import shlex

import pytest

from rig.commands import host as cmd
from tasks.profile import profile_files
from tasks.state import certs_path


def test_docker_service_enabled_and_running(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_docker_engine_answers(host):
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_buildx_installed(host, fleet):
    result = host.run("docker buildx version")
    assert result.rc == 0, result.stderr
    if fleet.bootstrap.buildx.version:
        assert fleet.bootstrap.buildx.version in result.stdout


def test_daemon_json_matches_spec(host, fleet, target):
    content = host.file("/etc/docker/daemon.json").content_string
    expected = cmd.daemon_json(fleet.bootstrap.daemon, fleet.gpu_enabled(target.name))
    assert json.loads(content) == json.loads(expected)


def test_machine_profile_content_and_mode(host, fleet, target):
    for path, content in profile_files(fleet.profile_of(target.name)).items():
        remote = host.file(path)
        assert remote.mode == 0o644, path
        assert remote.content_string == content, path


def test_registry_ca_installed(host, fleet):
    path = certs_path(fleet)
    if path is None:
        return  # the registry uses a public CA (GHCR): nothing to install
    assert host.file(path).content_string == fleet.path(fleet.registry.ca_file).read_text()


def test_registry_login_is_valid(host, fleet):
    # `docker login <registry>` with no password re-validates the stored credentials.
    result = host.run(f"docker login {shlex.quote(fleet.registry.host)} </dev/null")
    assert result.rc == 0, result.stderr


def test_pull_from_registry_works(host, fleet):
    pullable = [f.base_image for f in fleet.families.values()
                if f.base_image.startswith(fleet.registry.host + "/")]
    if not pullable:
        pytest.skip("no family base image lives in the spec's registry: nothing to pull")
    for image in pullable:
        quoted = shlex.quote(image)
        had_it = host.run(f"docker image inspect {quoted}").rc == 0
        result = host.run(f"docker pull -q {quoted}")
        assert result.rc == 0, result.stderr
        if not had_it:  # a check leaves the host as it found it (no image nothing runs)
            assert host.run(f"docker image rm {quoted}").rc == 0


def test_deploy_user_in_docker_group(host, fleet):
    user = fleet.bootstrap.deploy_user
    if user is None:
        pytest.skip("bootstrap.deploy_user is not set in the spec")
    assert "docker" in host.user(user).groups


def test_gpu_is_the_one_the_profile_describes(host, fleet, target):
    """nvidia-smi answers, and the card is the profile's (model, compute capability, memory)."""
    from rig.gpu.smi import GPU_QUERY, parse_gpus
    from tasks.nvidia import gpu_problem

    if not fleet.gpu_present(target.name):
        pytest.skip(f"{target.name}: no GPU in its profile, or bootstrap.nvidia is disabled")
    result = host.run(GPU_QUERY)
    assert result.rc == 0, f"nvidia-smi failed (exit {result.rc}): {result.stdout}{result.stderr}"
    gpus = parse_gpus(result.stdout)
    profile = fleet.profile_of(target.name)
    assert gpu_problem(gpus, profile) is None, gpu_problem(gpus, profile)
    assert [g.memory_total_mib for g in gpus if g.name == profile.gpu.model][0] == \
        profile.gpu.memory_mib


# -- the proxy in front of the services (rig/commands/proxy.py) ---------------------------------
def test_proxy_enabled_running_and_its_config_is_the_specs(host, fleet, target):
    from rig.commands import proxy

    if not fleet.proxy.enabled:
        pytest.skip("proxy.enabled is false: services bind their ports on the host network")
    haproxy = host.service("haproxy")
    assert haproxy.is_running and haproxy.is_enabled
    assert host.file(proxy.CONFIG).content_string == proxy.config_text(fleet, target.name)
    check = host.run(f"haproxy -c -q -f {proxy.CONFIG}")
    assert check.rc == 0, check.stderr


def test_proxy_owns_each_service_port_and_its_admin_socket_is_roots(host, fleet, target):
    from rig.commands import proxy

    if not fleet.proxy.enabled:
        pytest.skip("proxy.enabled is false")
    socket = host.file(proxy.SOCKET)
    assert socket.is_socket and (socket.user, socket.mode) == ("root", 0o600)
    listening = host.run("ss -Hltnp").stdout
    for service in fleet.services_on(target.name):
        port = fleet.services[service].port
        owners = [line for line in listening.splitlines() if f":{port} " in line]
        assert owners and all('"haproxy"' in line for line in owners), (service, owners)
    workers = host.run("ps -o user= -C haproxy").stdout.split()
    assert "haproxy" in workers, workers     # the workers drop root


def test_services_network_is_a_bridge(host, fleet):
    if not fleet.proxy.enabled:
        pytest.skip("proxy.enabled is false")
    driver = host.run(f"docker network inspect -f '{{{{.Driver}}}}' {fleet.proxy.network}")
    assert driver.stdout.strip() == "bridge", driver.stderr
