"""The real lab: `rig lab up` once per session from a clean slate, torn down at the end
(RIG_LAB_KEEP=1 keeps it for debugging; `make test` tears it down regardless).
RIG_LAB_REUSE=1 runs on the lab as it is instead of a fresh one (for one module at a time;
the bootstrap tests need bare hosts)."""

from gevent import monkey

monkey.patch_all()  # as pyinfra's CLI does, before ssl is imported

import os  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# the installed console script (make setup: pip install ., not editable), as operators run it
RIG = [str(Path(sys.executable).with_name("rig"))]


def rig(*args, env=None, check=True, cwd=REPO) -> subprocess.CompletedProcess:
    result = subprocess.run([*RIG, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"rig {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def lab():
    if os.environ.get("RIG_LAB_REUSE") != "1":
        rig("lab", "down")  # bootstrap tests need bare hosts: start from nothing
    up = rig("lab", "up")
    print(up.stdout)
    try:
        yield REPO
    finally:
        if os.environ.get("RIG_LAB_KEEP") != "1":
            rig("lab", "down", check=False)


def copy_spec(target: Path) -> Path:
    """The spec in a folder a test may edit (not a git checkout, so builds there take --tag),
    with copies of the lab's state, keys, CA and token in its .lab/ (rig/lab/layout.py)."""
    from rig.lab.layout import copy_spec as copy

    return copy(REPO, target)


def git_checkout(spec: Path) -> Path:
    """Make a spec copy a git checkout with one commit (as an operator's is): builds there get
    `rig tag` tags and provenance naming the commit."""
    (spec / ".gitignore").write_text(".lab/\n__pycache__/\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fleet"]):
        git(spec, *args)
    return spec


def git(spec: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(spec), "-c", "user.name=ops", "-c", "user.email=ops@lab",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def rig_at(spec: Path, *args, check=True) -> subprocess.CompletedProcess:
    """The installed rig against a spec copy, run in its folder."""
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=check)


def registry_client(spec: Path):
    """The lab registry, as the spec copy's rig reaches it (its token and CA)."""
    from rig.inventory import load_spec
    from rig.registry import client_for

    return client_for(load_spec(spec / "fleet.yml", "lab"))


def rig_containers(host: str) -> str:
    """rig's containers on the host: name, id, image, started at (a restart or a swap shows)."""
    return ssh(host, "docker ps -aq --filter label=rig.service | xargs -r docker inspect -f "
                     "'{{.Name}} {{.Id}} {{.Image}} {{.State.StartedAt}}' | sort").stdout


@pytest.fixture
def spec_copy(lab, tmp_path):
    return copy_spec(tmp_path)


@pytest.fixture(scope="session")
def bootstrapped(lab):
    """Hosts with Docker, buildx, registry login and profiles (a no-op when already done)."""
    rig("bootstrap", "-i", "inventory/lab.py")
    return lab


def lab_address(host: str) -> str:
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    return LabState.load(LabPaths.for_repo(REPO)).hosts[host]


def ssh(host: str, command: str, check=True, user="ops", sudo=True) -> subprocess.CompletedProcess:
    """Run a command on a lab host as an operator would: plain ssh as `ops` with the lab's key,
    and sudo (root login is refused on lab hosts, as on MainPC and PC2)."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    paths = LabPaths.for_repo(REPO)
    address = LabState.load(paths).hosts[host]
    argv = ["ssh", "-i", str(paths.ssh_dir / "id_ed25519"), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={paths.ssh_dir / 'known_hosts'}", f"{user}@{address}",
            f"sudo -n sh -c {shlex.quote(command)}" if sudo else command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{host}: {command} exited {result.returncode}: {result.stderr}")
    return result
