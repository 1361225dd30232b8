"""The real lab: `rig lab up` once per session from a clean slate, torn down at the end
(RIG_LAB_KEEP=1 keeps it for debugging; `make test` tears it down regardless)."""

from gevent import monkey

monkey.patch_all()  # as pyinfra's CLI does, before ssl is imported

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RIG = [sys.executable, "-m", "rig.cli"]


def rig(*args, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([*RIG, *args], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"rig {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def lab():
    rig("lab", "down")  # bootstrap tests need bare hosts: start from nothing
    up = rig("lab", "up")
    print(up.stdout)
    try:
        yield REPO
    finally:
        if os.environ.get("RIG_LAB_KEEP") != "1":
            rig("lab", "down", check=False)


@pytest.fixture
def spec_copy(lab, tmp_path):
    """A copy of the spec and inventories that a test may edit; .lab is the real lab's."""
    for name in ("fleet.yml", "lab.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("profiles", "inventory", "group_data"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / ".lab").symlink_to(REPO / ".lab")
    (tmp_path / "tasks").symlink_to(REPO / "tasks")
    return tmp_path
