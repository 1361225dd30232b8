"""Lab naming and command builders, inventory building: pure, no host."""

from pathlib import Path

import pytest

from rig.config import load_fleet
from rig.errors import RigError
from rig.inventory import groups_for, parse_target, production_connection, resolve_env, targets
from rig.lab.engine import dockerd_argv
from rig.lab.layout import (
    LabPaths,
    container_name,
    host_address,
    host_names,
    host_run_argv,
    package_key,
)
from rig.lab.registry import registry_config
from rig.registry import parse_challenge

REPO = Path(__file__).resolve().parents[2]


def test_host_names_follow_the_real_fleet_then_nodes():
    assert host_names(1) == ["mainpc"]
    assert host_names(2) == ["mainpc", "pc2"]
    assert host_names(4) == ["mainpc", "pc2", "node3", "node4"]
    with pytest.raises(ValueError):
        host_names(0)


def test_host_addresses_are_fixed_on_the_lab_subnet():
    assert [host_address(i) for i in range(3)] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]


def test_host_run_argv_uses_capabilities_not_privileged():
    argv = host_run_argv("pc2", "10.77.0.12")
    assert "--privileged" not in argv
    assert argv[:10] == ["docker", "run", "--detach", "--name", "rig-lab-pc2", "--hostname",
                         "pc2", "--network", "rig-lab", "--ip"]
    assert argv[10] == "10.77.0.12"
    assert argv[-2:] == ["rig-lab/host:trixie", "/sbin/init"]
    caps = [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"]
    assert caps == ["SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE", "NET_RAW", "SYS_CHROOT",
                    "SETFCAP", "SYS_NICE", "IPC_LOCK"]
    assert "systempaths=unconfined" in argv and "rig-lab-pc2-docker:/var/lib/docker" in argv
    assert argv[argv.index("--sysctl") + 1] == "net.ipv4.ip_forward=0"   # nothing leaves via it
    assert container_name("pc2") == "rig-lab-pc2"


def test_private_dockerd_never_shares_a_users_engine_paths(tmp_path):
    paths = LabPaths(tmp_path / ".lab")
    argv = dockerd_argv(paths)
    assert argv[argv.index("--host") + 1] == f"unix://{paths.engine_socket}"
    assert argv[argv.index("--data-root") + 1] == str(tmp_path / ".lab/engine/data")
    assert argv[argv.index("--bridge") + 1] == "none"
    assert str(paths.engine_socket).startswith("/run/rig-lab/")
    assert "/var/run/docker.sock" not in " ".join(argv)


def test_registry_listens_only_on_the_lab_gateway_with_tls_and_auth(tmp_path):
    config = registry_config(LabPaths(tmp_path), "secret")
    assert config["http"]["addr"] == "10.77.0.1:5000"
    assert config["http"]["tls"]["certificate"].endswith("registry/server.crt")
    assert config["auth"]["htpasswd"]["path"].endswith("registry/htpasswd")


def test_debootstrap_cache_key_changes_with_packages():
    assert package_key("trixie", ("a", "b")) == package_key("trixie", ("b", "a"))
    assert package_key("trixie", ("a",)) != package_key("trixie", ("a", "b"))


def test_parse_target():
    assert parse_target("ops@192.168.1.10:2222") == {
        "ssh_hostname": "192.168.1.10", "ssh_user": "ops", "ssh_port": 2222}
    assert parse_target("mainpc.lan") == {"ssh_hostname": "mainpc.lan"}
    with pytest.raises(ValueError):
        parse_target("ops@host:ssh")


def test_production_inventory_names_what_is_missing(tmp_path):
    (tmp_path / "inventory").mkdir()
    fleet = load_fleet(REPO / "fleet.yml")
    with pytest.raises(RigError) as caught:
        production_connection(tmp_path, fleet, environ={"RIG_HOST_MAINPC": "ops@10.0.0.5"})
    assert caught.value.lines == [
        "production: no address for host 'pc2': set RIG_HOST_PC2=user@address[:port] "
        "or add `pc2: {address: ...}` to inventory/hosts.local.yml"
    ]


KNOWN = {"RIG_KNOWN_HOSTS": "/home/op/.ssh/known_hosts"}
STRICT = {"ssh_strict_host_key_checking": "yes", "ssh_known_hosts_file": "/home/op/.ssh/known_hosts"}


def test_production_inventory_from_environment_and_local_file(tmp_path):
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "hosts.local.yml").write_text(
        "pc2: {address: 10.0.0.6, user: admin, sudo: false, key: /home/op/.ssh/id_pc2}\n")
    fleet = load_fleet(REPO / "fleet.yml")
    connection = production_connection(tmp_path, fleet,
                                       environ={"RIG_HOST_MAINPC": "ops@10.0.0.5", **KNOWN})
    assert connection == {
        "mainpc": {**STRICT, "ssh_hostname": "10.0.0.5", "ssh_user": "ops", "_sudo": True},
        "pc2": {**STRICT, "ssh_hostname": "10.0.0.6", "ssh_user": "admin", "_sudo": False,
                "ssh_key": "/home/op/.ssh/id_pc2"},
    }


def test_production_root_needs_no_sudo_and_keys_are_never_accepted_silently(tmp_path):
    (tmp_path / "inventory").mkdir()
    fleet = load_fleet(REPO / "fleet.yml")
    connection = production_connection(tmp_path, fleet, environ={
        "RIG_HOST_MAINPC": "root@10.0.0.5", "RIG_HOST_PC2": "10.0.0.6", **KNOWN})
    assert connection["mainpc"]["_sudo"] is False and connection["pc2"]["_sudo"] is False
    assert all(c["ssh_strict_host_key_checking"] == "yes" for c in connection.values())


def test_a_newline_in_a_host_address_is_refused(tmp_path):
    (tmp_path / "inventory").mkdir()
    fleet = load_fleet(REPO / "fleet.yml")
    with pytest.raises(RigError):
        production_connection(tmp_path, fleet, environ={
            "RIG_HOST_MAINPC": "ops@10.0.0.5\nProxyCommand sh", "RIG_HOST_PC2": "x", **KNOWN})


def test_targets_carry_the_one_loaded_spec_and_groups(tmp_path):
    fleet = load_fleet(REPO / "fleet.yml")
    found = targets(fleet, "production", {"RIG_HOST_MAINPC": "ops@10.0.0.5",
                                          "RIG_HOST_PC2": "ops@10.0.0.6", **KNOWN})
    assert [t.name for t in found] == ["mainpc", "pc2"]
    assert all(t.data["rig_fleet"] is fleet for t in found)
    groups = groups_for(found)
    assert [h for h, _ in groups["canary"]] == ["mainpc"]
    assert [h for h, _ in groups["gpu"]] == ["mainpc", "pc2"]


def test_environment_resolution():
    assert resolve_env(None, None, {}) == "lab"
    assert resolve_env(None, "inventory/production.py", {}) == "production"
    assert resolve_env(None, None, {"RIG_ENV": "production"}) == "production"
    assert resolve_env("lab", "inventory/production.py", {"RIG_ENV": "production"}) == "lab"
    with pytest.raises(RigError):
        resolve_env("staging", None, {})


def test_registry_challenges():
    assert parse_challenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",'
                           'scope="repository:a/b:pull"') == (
        "bearer", {"realm": "https://ghcr.io/token", "service": "ghcr.io",
                   "scope": "repository:a/b:pull"})
    assert parse_challenge('Basic realm="rig-lab"') == ("basic", {"realm": "rig-lab"})
