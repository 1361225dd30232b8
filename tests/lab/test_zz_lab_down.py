"""Last: `rig lab down` leaves no trace (runs after every other lab test, by file order)."""

import subprocess
from pathlib import Path

from rig.lab.layout import BRIDGE, REGISTRY, LabPaths
from rig.lab.state import LabState

from .conftest import REPO, rig, ssh


def test_every_ssh_login_of_the_whole_run_was_as_ops(lab):
    """sshd's own log on each host: rig, testinfra and the tests logged in as ops, never root."""
    for host in ("mainpc", "pc2"):
        log = ssh(host, "journalctl -u ssh --no-pager -o cat").stdout
        accepted = [line for line in log.splitlines() if line.startswith("Accepted ")]
        assert accepted, log[-2000:]
        assert all(" for ops from " in line for line in accepted), accepted
        assert "Accepted publickey for root" not in log


def test_lab_down_leaves_nothing_behind(lab):
    paths = LabPaths.for_repo(REPO)
    state = LabState.load(paths)
    assert state is not None
    rig("lab", "down")
    assert not paths.root.exists()
    assert not paths.run_dir.exists()
    assert not Path(f"/sys/class/net/{BRIDGE}").exists()
    assert not (Path("/etc/docker/certs.d") / REGISTRY).exists()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(paths.engine_socket) not in processes
    assert "docker-registry serve" not in processes
    status = rig("lab", "status", check=False)
    assert status.returncode == 1 and "DOWN not up" in status.stdout
