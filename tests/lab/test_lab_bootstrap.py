"""On the real lab: the lab itself, a converge over SSH, bootstrap from bare and again,
the verify suite, one profile change, and the pre-flight refusals."""

import json
import time

import testinfra
from pyinfra.api import deploy
from pyinfra.operations import files

from rig.inventory import load_spec
from rig.ops.job import Job
from rig.secrets import registry_token
from rig.verify import load_targets, write_ssh_config
from tasks.bootstrap import bootstrap

from .conftest import REPO, rig, ssh

PROBE = "/etc/rig-lab-probe"


@deploy("probe")
def probe(present: bool = True):
    files.directory(name="probe directory", path=PROBE, present=present, mode="755")


def converge(repo, deploy_func, **kwargs):
    job = Job(repo / "fleet.yml", "lab")
    with job.session(list(job.fleet.hosts)) as session:
        return session.run(deploy_func, **kwargs)


def lab_fleet(repo):
    return load_spec(repo / "fleet.yml", "lab")


def lab_hosts(repo=REPO):
    _, targets = load_targets({"RIG_CONFIG": str(repo / "fleet.yml"), "RIG_ENV": "lab"})
    config = write_ssh_config(targets)
    return {t.name: testinfra.get_host(f"ssh://{t.name}", ssh_config=config, sudo=True)
            for t in targets}


def test_lab_up_again_creates_nothing(lab):
    output = rig("lab", "up").stdout
    for word in ("created", "started", "pushed", "imported", "removed"):
        assert f" {word} " not in output, output
    assert "host mainpc    running 10.77.0.11" in output
    assert "host pc2       running 10.77.0.12" in output


def test_lab_status_reports_every_part_answering(lab):
    output = rig("lab", "status").stdout
    for part in ("engine", "network", "registry", "host mainpc", "host pc2"):
        assert any(line.split()[:len(part.split())] == part.split() and " ok " in line
                   for line in output.splitlines()), output


def test_root_login_is_refused_and_ops_has_passwordless_sudo(lab):
    as_root = ssh("mainpc", "true", check=False, user="root", sudo=False)
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr
    assert ssh("mainpc", "id -u").stdout.strip() == "0"                      # via sudo -n
    assert ssh("mainpc", "id -un", sudo=False).stdout.strip() == "ops"


def test_trivial_converge_over_ssh_then_read_back_with_testinfra(lab):
    first = converge(lab, probe)
    assert {h: r.changed for h, r in first.items()} == {
        "mainpc": ["probe | probe directory"], "pc2": ["probe | probe directory"]}
    hosts = lab_hosts()
    assert all(hosts[h].file(PROBE).is_directory for h in ("mainpc", "pc2"))
    second = converge(lab, probe)
    assert all(r.ok and r.changed == [] for r in second.values())
    converge(lab, probe, present=False)
    assert not any(hosts[h].file(PROBE).exists for h in ("mainpc", "pc2"))


def test_bootstrap_from_bare_then_a_second_run_changes_nothing(lab):
    token = registry_token(lab_fleet(lab))
    started = time.monotonic()
    cold = converge(lab, bootstrap, token=token)
    cold_s = time.monotonic() - started
    assert all(r.ok for r in cold.values()), cold
    for result in cold.values():
        assert "Bootstrap | Docker engine | engine packages" in result.changed
        assert "Bootstrap | Docker engine | registry login" in result.changed
        assert "Bootstrap | Machine profile | machine profile" in result.changed
    started = time.monotonic()
    warm = converge(lab, bootstrap, token=token)
    warm_s = time.monotonic() - started
    assert {h: (r.ok, r.changed) for h, r in warm.items()} == {
        "mainpc": (True, []), "pc2": (True, [])}
    print(f"bootstrap of 2 hosts: cold {cold_s:.1f} s, no-change {warm_s:.1f} s")


def test_verify_suite_passes_on_the_bootstrapped_lab(lab):
    import subprocess

    def masters() -> set[str]:   # testinfra's multiplexed connections (ssh's own title)
        found = subprocess.run(["pgrep", "-f", "ssh: /tmp/rig-v-"], capture_output=True, text=True)
        return set(found.stdout.split())
    before = masters()           # an earlier test's own testinfra hosts may still linger
    result = rig("verify", "-i", "inventory/lab.py", "--suite", "bootstrap", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
    assert masters() - before == set()    # the suite's SSH connections ended with it


def test_verify_finds_a_missing_gpu_through_the_stand_in(lab):
    """The GPU check reads nvidia-smi on each host as on MainPC: pc2 without its card fails."""
    changed = rig("lab", "gpu", "pc2", "--missing")
    assert "nvidia-smi fails: no driver" in changed.stdout
    try:
        result = rig("verify", "-i", "inventory/lab.py", "--suite", "bootstrap", check=False)
    finally:
        rig("lab", "gpu", "pc2", "--present")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout and "nvidia-smi failed (exit 9)" in result.stdout
    assert "test_gpu_is_the_one_the_profile_describes" in result.stdout
    again = rig("verify", "-i", "inventory/lab.py", "--suite", "bootstrap", check=False)
    assert again.returncode == 0, again.stdout + again.stderr


def test_changing_one_profile_value_changes_exactly_that_host(lab, spec_copy):
    profile = spec_copy / "profiles" / "pc2.yml"
    profile.write_text(profile.read_text().replace("threads: 8", "threads: 6"))
    token = registry_token(lab_fleet(spec_copy))
    results = converge(spec_copy, bootstrap, token=token)
    assert {h: r.changed for h, r in results.items()} == {
        "mainpc": [], "pc2": ["Bootstrap | Machine profile | machine profile"]}
    env = lab_hosts()["pc2"].file("/etc/rig/machine.env").content_string
    assert "RIG_THREADS=6" in env
    back = converge(lab, bootstrap, token=token)  # the real spec again: pc2 changes back
    assert {h: r.changed for h, r in back.items()} == {
        "mainpc": [], "pc2": ["Bootstrap | Machine profile | machine profile"]}


def test_missing_token_is_refused_before_any_host_is_touched(lab, spec_copy):
    overlay = spec_copy / "lab.yml"
    overlay.write_text(overlay.read_text().replace(".lab/registry/token", ".lab/registry/none"))
    result = rig("-c", str(spec_copy / "fleet.yml"), "bootstrap", check=False,
                 env={"RIG_LAB_REGISTRY_TOKEN": ""})
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "rig: registry 10.77.0.1:5000: no token: set the environment variable "
        "RIG_LAB_REGISTRY_TOKEN or the file .lab/registry/none (run `rig lab up` first)")
    assert "Traceback" not in result.stderr


def test_unreachable_host_is_named_in_one_line(lab):
    pc2 = lab_hosts()["pc2"]
    pc2.run("systemctl stop ssh.service ssh.socket")
    try:
        result = rig("bootstrap", check=False)
    finally:
        subprocess_restart_ssh()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("rig: pc2: unreachable: "), result.stderr
    assert "Traceback" not in result.stderr


def test_a_sudo_that_asks_for_a_password_fails_pre_flight_in_one_line(lab):
    ssh("pc2", "mv /etc/sudoers.d/ops /etc/rig-lab-sudoers.off")
    try:
        result = rig("bootstrap", check=False)
    finally:
        docker_exec("pc2", "mv /etc/rig-lab-sudoers.off /etc/sudoers.d/ops")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("rig: pc2: sudo failed for ops ("), result.stderr
    assert "NOPASSWD" in lines[0] and lines[-1].strip() == "nothing was changed"
    assert "Traceback" not in result.stderr


def docker_exec(host: str, command: str):
    import subprocess

    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    state = LabState.load(LabPaths.for_repo(REPO))
    subprocess.run(["docker", "exec", f"rig-lab-{host}", "sh", "-c", command],
                   env={"DOCKER_HOST": state.docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"},
                   check=True, capture_output=True)


def subprocess_restart_ssh():
    import subprocess

    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    state = LabState.load(LabPaths.for_repo(REPO))
    subprocess.run(["docker", "exec", "rig-lab-pc2", "systemctl", "start", "ssh.service"],
                   env={"DOCKER_HOST": state.docker_host, "PATH": "/usr/local/bin:/usr/bin:/bin"},
                   check=True, capture_output=True)


def test_unknown_production_host_key_fails_pre_flight_until_trusted(lab, tmp_path):
    """Production checks host keys strictly against the operator's known_hosts: an unknown
    key is refused with its fingerprint and the command that trusts it; nothing is changed."""
    import re
    import subprocess

    from rig.lab.layout import LabPaths

    paths = LabPaths.for_repo(REPO)
    known = tmp_path / "known_hosts"
    env = {"RIG_HOST_MAINPC": "ops@10.77.0.11", "RIG_HOST_PC2": "ops@10.77.0.12",
           "RIG_KNOWN_HOSTS": str(known), "RIG_SSH_KEY": str(paths.ssh_dir / "id_ed25519"),
           "GHCR_TOKEN": "not-a-real-token"}
    refused = rig("--env", "production", "bootstrap", "--limit", "mainpc", env=env, check=False)
    assert refused.returncode == 1, refused.stdout
    first = refused.stderr.splitlines()[0]
    match = re.match(r"rig: mainpc: unknown host key \(it offers ssh-ed25519 (SHA256:\S+)\); "
                     r"nothing was changed$", first)
    assert match, refused.stderr
    assert "rig hosts trust mainpc --fingerprint" in refused.stderr
    lab_keys = subprocess.run(["ssh-keygen", "-lf", str(paths.ssh_dir / "known_hosts")],
                              capture_output=True, text=True, check=True).stdout
    assert f"{match.group(1)} 10.77.0.11 (ED25519)" in lab_keys  # the real key, checked out of band
    assert not known.exists()

    wrong = rig("--env", "production", "hosts", "trust", "mainpc", "--fingerprint",
                "SHA256:" + "A" * 43, env=env, check=False)
    assert wrong.returncode == 1 and "nothing was trusted" in wrong.stderr
    trusted = rig("--env", "production", "hosts", "trust", "mainpc", "--fingerprint",
                  match.group(1), env=env)
    assert f"mainpc: ssh-ed25519 {match.group(1)} added to {known}" in trusted.stdout
    status = rig("--env", "production", "status", "--limit", "mainpc", "--json", env=env)
    assert {row["host"] for row in json.loads(status.stdout)} == {"mainpc"}

