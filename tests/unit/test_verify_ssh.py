"""The ssh_config rig writes for testinfra's ssh backend (rig/verify.py): strict host keys, one
multiplexed connection per host in a private folder, ended with the suite; and no value that
could smuggle a directive in."""

from __future__ import annotations

import pytest

from rig.verify import Target, close_masters_argv, ssh_config, write_ssh_config

MAINPC = Target("mainpc", "10.77.0.11", "ops", 22, "/k/id_ed25519", "/k/known_hosts", True)


def test_one_host_block_with_strict_keys_and_a_multiplexed_connection():
    assert ssh_config([MAINPC], "/tmp/rig-v-x") == (
        "Host mainpc\n  HostName 10.77.0.11\n  User ops\n  Port 22\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  ControlMaster auto\n"
        "  ControlPath /tmp/rig-v-x/%C\n  ControlPersist 60\n  ConnectTimeout 10\n"
        "  ServerAliveInterval 5\n  ServerAliveCountMax 3\n"
        "  IdentityFile /k/id_ed25519\n  IdentitiesOnly yes\n  UserKnownHostsFile /k/known_hosts\n")


def test_the_suite_ends_each_hosts_multiplexed_connection():
    pc2 = Target("pc2", "10.77.0.12", "ops", 22, None, None, True)
    assert close_masters_argv("/tmp/rig-v-x/ssh_config", [MAINPC, pc2]) == [
        ["ssh", "-F", "/tmp/rig-v-x/ssh_config", "-O", "exit", "mainpc"],
        ["ssh", "-F", "/tmp/rig-v-x/ssh_config", "-O", "exit", "pc2"]]


@pytest.mark.parametrize("value", ["a b", "a\nProxyCommand x", "", "a#b", "a'b"])
def test_a_value_that_could_add_a_directive_is_refused(value):
    with pytest.raises(ValueError, match="must be one word"):
        ssh_config([Target("mainpc", value, "ops", 22, None, None, False)], "/tmp/x")


def test_the_config_is_private_and_beside_its_sockets():
    import os
    import shutil
    import stat

    path = write_ssh_config([MAINPC])
    try:
        folder = os.path.dirname(path)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert f"ControlPath {folder}/%C" in open(path).read()
    finally:
        shutil.rmtree(os.path.dirname(path))
