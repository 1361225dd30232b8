"""The operator's path, end to end: rig installed with `pip install <checkout>` (not editable)
into a virtualenv outside the checkout, run from /tmp with `-c <checkout>/fleet.yml`, through
validate, bootstrap, build --push, images verify, rollout, status --json, rollback and verify,
on hosts reached as `ops` with sudo."""

import json
import subprocess
import sys

import pytest

from .conftest import REPO, copy_spec, rig, ssh

TAGS = ("op-t1", "op-t2")
SERVICE = "affective_processing_center"


@pytest.fixture(scope="module")
def installed(bootstrapped, tmp_path_factory):
    venv = tmp_path_factory.mktemp("operator") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)],
                         capture_output=True, text=True, timeout=600, cwd="/tmp")
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin" / "rig"


def op(rig_path, *args, check=True):
    """The installed rig, from /tmp, on the checkout's spec."""
    result = subprocess.run([str(rig_path), "-c", str(REPO / "fleet.yml"), "--env", "lab", *args],
                            cwd="/tmp", capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"rig {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_installed_rig_is_a_real_install_outside_the_checkout(installed):
    where = subprocess.run([str(installed.parent / "python"), "-c",
                            "import rig, tasks; print(rig.__file__); print(tasks.__file__)"],
                           cwd="/tmp", capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and where.count("site-packages") == 2


def test_every_verb_from_outside_the_checkout(installed, tmp_path):
    assert "valid" in op(installed, "validate").stdout
    assert "0 changes on 2 hosts" in op(installed, "bootstrap").stdout
    assert " passed" in op(installed, "verify", "--suite", "bootstrap").stdout
    # two tags: op-t1 from the checkout, op-t2 with one service changed (from a copy)
    built = op(installed, "build", "--push", "--allow-dirty", "--tag", TAGS[0]).stdout
    assert "5 of 5 images in 10.77.0.1:5000" in built
    spec = copy_spec(tmp_path)
    main = spec / f"dockerfiles/services/{SERVICE}/app/main.py"
    main.write_text(main.read_text().replace('"calm": (0.6, -0.7)', '"calm": (0.61, -0.7)'))
    rig("-c", str(spec / "fleet.yml"), "--env", "lab", "build", "--push", "--tag", TAGS[1],
        cwd=spec)
    assert '"missing": 0' in op(installed, "images", "verify", "--tag", TAGS[1], "--json").stdout

    for host in ("mainpc", "pc2"):  # from hosts that run nothing
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    assert "rollout op-t1 done" in op(installed, "rollout", "--tag", TAGS[0]).stdout
    assert "rollout op-t2 done" in op(installed, "rollout", "--tag", TAGS[1]).stdout
    status = json.loads(op(installed, "status", "--json").stdout)
    assert len(status) == 6 and all(r["health"] == "ok" for r in status)
    assert {r["tag"] for r in status if r["service"] == SERVICE} == {TAGS[1]}

    back = op(installed, "rollback", "--services", SERVICE).stdout
    assert "rollback previous done" in back
    status = json.loads(op(installed, "status", "--json").stdout)
    assert {r["tag"] for r in status if r["service"] == SERVICE} == {TAGS[0]}
    assert all(r["health"] == "ok" for r in status)
    assert " passed" in op(installed, "verify", "--suite", "services").stdout
    for host in ("mainpc", "pc2"):  # builds leave no folder behind; the lock is gone
        assert ssh(host, "ls -A /var/lib/rig/build 2>/dev/null | wc -l").stdout.strip() == "0"
        assert ssh(host, "test -e /var/lib/rig/rollout.lock", check=False).returncode == 1
