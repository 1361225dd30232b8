"""`make bench`: rig against the floor and a peer, measured in one run on the lab.

Every figure is the median of RIG_BENCH_RUNS (default 5) runs with min and max, and every
comparison is a ratio of two figures taken in this run, on the same hosts:
  1. no-change converge of mainpc+pc2: `rig bootstrap` vs the same state with Ansible
  2. rollout of one service to one host vs the floor (docker pull by digest, stop, run, first
     healthy answer, rm, by hand in one ssh session): timed inside the host (the physical floor
     of the docker work) and from this machine (a fresh ssh and sudo, as a person pays them),
     and where rig's extra time goes
  3. scale: no-change converge and a one-service rollout (canary 1, batch 2) on 2, 4, 8 hosts;
     one wave of 7 hosts vs one wave of 1 host; rig's peak memory in the 8-host rollout
  4. `rig build --push` when every image is already in the registry
  5. three changed services on one host vs one changed service on the same host
  6. SSH connections and commands under sudo on a host per rollout, converge and status, from
     the host's own sshd and sudo log lines; registry requests per no-change build, from the lab
     registry's access log
Writes bench/results.json. Leaves the lab up (8 hosts); `make lab-down` removes it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNS = int(os.environ.get("RIG_BENCH_RUNS", "5"))
WORK = REPO / ".bench"
RIG = [str(REPO / ".venv/bin/rig")]
SERVICE, PORT = "affective_processing_center", 6560
HOSTS8 = ["mainpc", "pc2", "node3", "node4", "node5", "node6", "node7", "node8"]
SERVICES3 = ["model_ops_coordinator", "real_time_audio_pipeline", SERVICE]


def say(message: str) -> None:
    print(message, flush=True)


def run(argv, cwd=REPO, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=1800)
    if check and result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv[:6]))} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


CPU: list[float] = []   # the control machine's CPU seconds (user + system) of each timed run


def timed(argv, cwd=REPO, env=None, expect: str | None = None) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = run(argv, cwd, env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if expect and not re.search(expect, result.stdout + result.stderr):
        raise SystemExit(f"bench: {' '.join(map(str, argv[:6]))}: expected /{expect}/ in output:\n"
                         f"{result.stdout[-1500:]}")
    return elapsed


def stats(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3),
            "max": round(max(samples), 3), "runs": [round(s, 3) for s in samples]}


def ssh_argv(host: str, command: str) -> list[str]:
    """A fresh ssh to the lab host as ops, the command under sudo (as a person runs it)."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    paths = LabPaths.for_repo(REPO)
    address = LabState.load(paths).hosts[host]
    return ["ssh", "-i", str(paths.ssh_dir / "id_ed25519"), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={paths.ssh_dir / 'known_hosts'}", f"ops@{address}",
            "sudo -n sh -c " + shlex.quote(command)]


def ssh(host: str, command: str) -> str:
    return run(ssh_argv(host, command)).stdout


def ssh_all(commands: dict[str, str]) -> float:
    """The commands on their hosts at once, each over a fresh ssh: seconds until all ended."""
    started = time.perf_counter()
    procs = {h: subprocess.Popen(ssh_argv(h, c), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for h, c in commands.items()}
    for host, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"bench: {host}: by hand failed ({proc.returncode}): {err[-500:]}")
    return time.perf_counter() - started


# -- setup ------------------------------------------------------------------------------------
def spec_copy() -> Path:
    """The spec with rollout.min_healthy 0s, so a rollout and the floor both stop at the first
    healthy answer (the policy's extra wait is not overhead)."""
    folder = WORK / "spec"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from rig.lab.layout import copy_spec

    copy_spec(REPO, folder)
    fleet = (folder / "fleet.yml").read_text()
    (folder / "fleet.yml").write_text(fleet.replace("min_healthy: 2s", "min_healthy: 0s"))
    return folder


def setup() -> tuple[Path, dict]:
    say("setup: lab with 8 hosts, bootstrapped, images bench-1 and bench-2 in the registry")
    run([*RIG, "lab", "up", "--hosts", "8"])
    run([*RIG, "bootstrap"])
    spec = spec_copy()
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    run([*rig_spec, "build", "--push", "--allow-dirty", "--tag", "bench-1"], cwd=spec)
    run([*rig_spec, "build", "--push", "--allow-dirty", "--tag", "bench-2",
         "--build-arg", f"{SERVICE}:FAULT=none"], cwd=spec)
    run([*rig_spec, "build", "--push", "--allow-dirty", "--tag", "bench-3",  # all three differ
         *(a for s in SERVICES3 for a in ("--build-arg", f"{s}:FAULT=bench-3"))], cwd=spec)
    # Only the benchmarked service runs: 24 idle containers would load the 2 cores for nothing.
    for host in HOSTS8:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) >/dev/null 2>&1; "
                  "rm -f /var/lib/rig/state.json")
    run([*rig_spec, "rollout", "--tag", "bench-1", "--services", SERVICE, "--canary", "mainpc",
         "--batch", "4", "--no-verify"], cwd=spec)
    digests = {}
    for tag in ("bench-1", "bench-2"):
        rows = json.loads(run([*rig_spec, "images", "verify", "--tag", tag, "--json"], cwd=spec).stdout)
        digests[tag] = next(r["digest"] for r in rows["images"] if f"/{SERVICE}:" in r["image"])
    return spec, digests


# -- 1. converge vs Ansible -------------------------------------------------------------------
def ansible_venv() -> Path:
    venv = WORK / "ansible-venv"
    if not (venv / "bin" / "ansible-playbook").exists():
        say("  creating .bench/ansible-venv (ansible-core 2.19, the newest for Python 3.11)")
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin/pip"), "install", "-q", "ansible-core==2.19.14"])
    if not list(venv.glob("lib/python*/site-packages/ansible_collections/community/docker")):
        say("  adding the community collections (ansible 12.3: community.docker for the rollout)")
        run([str(venv / "bin/pip"), "install", "-q", "ansible==12.3.0", "ansible-core==2.19.14"])
    return venv


def bench_converge(hosts: list[str]) -> dict:
    import ansible  # bench/ansible.py, beside this file (python puts the script's folder first)

    from rig.inventory import load_spec
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState
    from rig.secrets import registry_token

    say(f"1. no-change converge of {', '.join(hosts)}: rig bootstrap vs ansible-playbook")
    for host in hosts:  # Ansible's modules need a full python3 on the host; rig needs none
        ssh(host, "dpkg-query -W -f='${Status}' python3 2>/dev/null | grep -q 'ok installed' || "
                  "(apt-get update -qq && apt-get install -y -qq python3 >/dev/null)")
    fleet = load_spec(REPO / "fleet.yml", "lab")
    addresses = LabState.load(LabPaths.for_repo(REPO)).hosts
    folder = ansible.write(WORK / "ansible", REPO, fleet, {h: addresses[h] for h in hosts},
                           registry_token(fleet))
    playbook = [str(ansible_venv() / "bin/ansible-playbook"), "bootstrap.yml",
                "-e", "@secret.json"]
    env = {"ANSIBLE_CONFIG": str(folder / "ansible.cfg")}
    first = run(playbook, cwd=folder, env=env)
    say(f"  ansible warm-up: {first.stdout.strip().splitlines()[-1].strip()}")
    limit = ",".join(hosts)
    rig_times = [timed([*RIG, "bootstrap", "--limit", limit], expect=r"\b0 changes on") for _ in range(RUNS)]
    ansible_times = [timed(playbook, cwd=folder, env=env, expect=r"changed=0 .*\n.*changed=0 ")
                     for _ in range(RUNS)]
    result = {"rig": stats(rig_times), "ansible": stats(ansible_times)}
    result["ansible_over_rig"] = round(result["ansible"]["median"] / result["rig"]["median"], 2)
    return result


# -- 2. rollout overhead vs the floor --------------------------------------------------------
def floor_run(repository: str, digest: str, name: str, host: str = "mainpc") -> str:
    """The `docker run` rig itself runs for the service on `host` (same limits, read-only root,
    dropped capabilities, volumes, env), under another name and without rig's labels."""
    from rig.commands import container as cmd
    from rig.inventory import load_spec

    fleet = load_spec(WORK / "spec" / "fleet.yml", "lab")
    argv = cmd.run_argv(fleet, host, cmd.Release(SERVICE, "floor", repository, digest, "x"))
    argv[argv.index("--name") + 1] = name
    keep, skip = [], False
    for arg in argv:  # labels say what rig ran; the floor needs none
        if skip or arg == "--label":
            skip = not skip
            continue
        keep.append(arg)
    return shlex.join(keep)


def container_port() -> int:
    """Where the floor's container answers: rig's run flags publish it on slot a's loopback
    port behind the proxy (the port rig's own gate probes), else on the service's port."""
    from rig.inventory import load_spec

    fleet = load_spec(WORK / "spec" / "fleet.yml", "lab")
    return fleet.proxy.slot_port(PORT, "a") if fleet.proxy.enabled else PORT


def floor_script(repository: str, digest: str, old: str, new: str, host: str = "mainpc") -> str:
    """By hand, on the host: pull by digest, stop the old container, start the new one, poll
    (every 20 ms) its own port until the first healthy answer, remove the old one. Prints
    seconds. (Behind the proxy rig also switches it, a few ms on the admin socket.)"""
    return (
        "s=$(date +%s.%N); "
        f"docker pull -q {repository}@{digest} >/dev/null; docker stop -t 10 {old} >/dev/null; "
        f"{floor_run(repository, digest, new, host)} >/dev/null; "
        f"until curl -s -m 1 localhost:{container_port()}/health | grep -q '\"status\": \"ok\"'; "
        "do sleep 0.02; done; "
        f"h=$(date +%s.%N); docker rm {old} >/dev/null; e=$(date +%s.%N); "
        "echo \"$s $h $e\"")


def bench_rollout(spec: Path, digests: dict) -> dict:
    say(f"2. rollout of {SERVICE} to mainpc vs the floor by hand (min_healthy 0s for both)")
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    times, gates, preflight, locks, waves = [], [], [], [], []
    for i in range(RUNS):
        tag = ("bench-2", "bench-1")[i % 2]
        started = time.perf_counter()
        out = run([*rig_spec, "rollout", "--tag", tag, "--services", SERVICE, "--limit", "mainpc",
                   "--no-verify"], cwd=spec).stdout
        times.append(time.perf_counter() - started)
        phases = re.search(r"connect and pre-flight ([\d.]+) s, locks ([\d.]+) s, waves ([\d.]+) s "
                           r"with ([\d.]+) s in health gates", out)
        preflight.append(float(phases.group(1)))
        locks.append(float(phases.group(2)))
        waves.append(float(phases.group(3)) - float(phases.group(4)))
        gates.append(float(phases.group(4)))
    startup = [timed([*RIG, "--version"]) for _ in range(RUNS)]
    repository = f"10.77.0.1:5000/rig/{SERVICE}"
    ssh("mainpc", f"docker stop rig-{SERVICE} >/dev/null; docker rm -f floor-a floor-b >/dev/null 2>&1; "
                  f"{floor_run(repository, digests['bench-1'], 'floor-a')} >/dev/null")
    floors, floor_healthy, by_hand = [], [], []
    try:
        for i in range(RUNS):
            old, new = ("floor-a", "floor-b") if i % 2 == 0 else ("floor-b", "floor-a")
            digest = digests[("bench-2", "bench-1")[i % 2]]
            started = time.perf_counter()   # by hand: a fresh ssh, the handshake and sudo
            s, h, e = map(float, ssh("mainpc", floor_script(repository, digest, old, new)).split())
            by_hand.append(time.perf_counter() - started)
            floors.append(e - s)
            floor_healthy.append(h - s)
        ssh("mainpc", "docker rm -f floor-a floor-b >/dev/null 2>&1")
        by_ansible = bench_rollout_ansible(repository, digests)
    finally:
        ssh("mainpc", f"docker rm -f floor-a floor-b ans-a ans-b >/dev/null 2>&1; "
                      f"docker start rig-{SERVICE} >/dev/null")
    result = {"rig": stats(times), "floor": stats(floors), "floor_to_healthy": stats(floor_healthy),
              "floor_by_hand": stats(by_hand), "ansible": stats(by_ansible),
              "rig_gate": stats(gates), "rig_startup": stats(startup),
              "rig_preflight": stats(preflight), "rig_locks": stats(locks),
              "rig_wave_steps": stats(waves)}
    result["rig_over_floor"] = round(result["rig"]["median"] / result["floor"]["median"], 2)
    result["rig_over_floor_by_hand"] = round(result["rig"]["median"]
                                             / result["floor_by_hand"]["median"], 2)
    result["ansible_over_rig"] = round(result["ansible"]["median"] / result["rig"]["median"], 2)
    accounted = sum(result[k]["median"] for k in ("rig_gate", "rig_startup", "rig_preflight",
                                                  "rig_locks", "rig_wave_steps"))
    result["rig_other"] = round(result["rig"]["median"] - accounted, 3)
    return result


def bench_rollout_ansible(repository: str, digests: dict) -> list[float]:
    """The same one-service rollout as a playbook (bench/ansible.py ROLLOUT: community.docker and
    the uri module, pipelining and ControlPersist): pull by digest, stop the old container, run
    the new one with rig's flags, wait for the JSON health answer, remove the old one."""
    import ansible  # bench/ansible.py

    from rig.commands import container as cmd
    from rig.inventory import load_spec
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    say("   the same rollout with Ansible (community.docker, uri)")
    ssh("mainpc", "python3 -c 'import requests' 2>/dev/null || (apt-get update -qq && "
                  "apt-get install -y -qq python3 python3-requests >/dev/null)")
    fleet = load_spec(WORK / "spec" / "fleet.yml", "lab")
    address = LabState.load(LabPaths.for_repo(REPO)).hosts["mainpc"]
    folder = ansible.write_rollout(WORK / "ansible-rollout", REPO, address)
    playbook = [str(ansible_venv() / "bin/ansible-playbook"), "rollout.yml", "-e", "@vars.json"]
    env = {"ANSIBLE_CONFIG": str(folder / "ansible.cfg")}

    def play(old: str, new: str, digest: str) -> float:
        argv = cmd.run_argv(fleet, "mainpc", cmd.Release(SERVICE, "ansible", repository, digest, "x"))
        params = ansible.container_params(argv)
        params.update(name=new, labels={})        # as the floor: not one of rig's containers
        (folder / "vars.json").write_text(json.dumps({
            "image": f"{repository}@{digest}", "old": old, "port": container_port(), "run": params}))
        return timed(playbook, cwd=folder, env=env, expect=r"failed=0")

    ssh("mainpc", "docker rm -f ans-a ans-b >/dev/null 2>&1; "
                  f"{floor_run(repository, digests['bench-1'], 'ans-a')} >/dev/null")
    play("ans-a", "ans-b", digests["bench-2"])          # warm-up: the SSH master connection
    times = []
    for i in range(RUNS):
        old, new = ("ans-b", "ans-a") if i % 2 == 0 else ("ans-a", "ans-b")
        times.append(play(old, new, digests[("bench-1", "bench-2")[i % 2]]))
    return times


# -- 6. SSH connections and remote commands per host, from the host's own log -----------------
def host_log_counts(host: str, since: float, until: float) -> dict:
    """From mainpc's journal between two instants (lab hosts share this machine's clock):
    SSH logins (sshd's "Accepted publickey") and commands run under sudo (sudo's COMMAND=)."""
    window = f"--since @{int(since)} --until @{int(until) + 1} -o cat --no-pager"
    out = ssh(host, f"journalctl -u ssh {window} | grep -c 'Accepted publickey'; "
                    f"journalctl -t sudo {window} | grep -c 'COMMAND='; true")
    logins, commands = (int(n) for n in out.split()[:2])
    return {"connections": logins, "sudo_commands": commands}


def counted(host: str, argv, cwd=REPO, expect: str | None = None) -> dict:
    """Run argv with a quiet second on either side; what host's logs say it cost there."""
    time.sleep(1.1)
    since = time.time()
    timed(argv, cwd=cwd, expect=expect)
    until = time.time()
    time.sleep(1.1)
    return host_log_counts(host, since, until)


def bench_connections(spec: Path) -> dict:
    say("6. SSH connections and sudo commands on mainpc per command (sshd's and sudo's log)")
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    settle(spec, "mainpc")
    result = {
        "rollout": counted("mainpc", [*rig_spec, "rollout", "--tag", "bench-2", "--services",
                                      SERVICE, "--limit", "mainpc", "--no-verify"], cwd=spec,
                           expect=r"1 service\(s\) to start"),
        "converge": counted("mainpc", [*RIG, "bootstrap", "--limit", "mainpc"],
                            expect=r"\b0 changes on"),
        "status": counted("mainpc", [*RIG, "status", "--limit", "mainpc"]),
    }
    settle(spec, "mainpc")
    return result


# -- 4b. registry requests, from the lab registry's access log --------------------------------
def registry_requests(argv, cwd=REPO, expect: str | None = None) -> tuple[float, int]:
    """Seconds, and the requests rig made to the lab registry (its access log: one line per
    request, rig's have python-requests' user agent)."""
    from rig.lab.layout import LabPaths

    log = LabPaths.for_repo(REPO).registry_dir / "registry.log"
    start = log.stat().st_size
    seconds = timed(argv, cwd=cwd, expect=expect)
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    return seconds, sum(1 for line in lines if '"python-requests/' in line and ' HTTP/1.1" ' in line)


# -- 3. scale ---------------------------------------------------------------------------------
def bench_scale(spec: Path, digests: dict) -> dict:
    say("3. scale: no-change converge and one-service rollout on 2, 4, 8 hosts")
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    result = {}
    for count in (2, 4, 8):
        limit = ",".join(HOSTS8[:count])
        converge = [timed([*RIG, "bootstrap", "--limit", limit], expect=r"\b0 changes on")
                    for _ in range(RUNS)]
        settle(spec, limit)
        rollouts = []
        for i in range(RUNS):
            tag = ("bench-2", "bench-1")[i % 2]
            rollouts.append(timed([*rig_spec, "rollout", "--tag", tag, "--services", SERVICE,
                                   "--limit", limit, "--canary", "mainpc", "--batch", "2",
                                   "--no-verify"], cwd=spec, expect=r"service\(s\) to start"))
        result[str(count)] = {"converge": stats(converge), "rollout": stats(rollouts)}
    result["converge_8_over_2"] = round(result["8"]["converge"]["median"]
                                        / result["2"]["converge"]["median"], 2)
    say("   one wave of 7 hosts vs one wave of 1 host")
    seven = ",".join(HOSTS8[1:])
    settle(spec, seven)
    wave7, cpu7 = [], []
    for i in range(RUNS):
        wave7.append(timed([*rig_spec, "rollout", "--tag", ("bench-2", "bench-1")[i % 2],
                            "--services", SERVICE, "--limit", seven, "--canary", seven,
                            "--no-verify"], cwd=spec, expect=r": 7 service\(s\) to start"))
        cpu7.append(CPU[-1])
    settle(spec, "pc2")
    wave1, cpu1 = [], []
    for i in range(RUNS):
        wave1.append(timed([*rig_spec, "rollout", "--tag", ("bench-2", "bench-1")[i % 2],
                            "--services", SERVICE, "--limit", "pc2", "--canary", "pc2",
                            "--no-verify"], cwd=spec, expect=r": 1 service\(s\) to start"))
        cpu1.append(CPU[-1])
    result["wave7"], result["wave1"] = stats(wave7), stats(wave1)
    # the control machine's CPU: what one command costs, and what each more host in a wave adds
    result["cpu_wave1"], result["cpu_wave7"] = stats(cpu1), stats(cpu7)
    result["cpu_per_extra_host"] = round((result["cpu_wave7"]["median"]
                                          - result["cpu_wave1"]["median"]) / 6, 3)
    result["wave7_over_wave1"] = round(result["wave7"]["median"] / result["wave1"]["median"], 2)
    result.update(scale_floors(digests))
    return result


def scale_floors(digests: dict) -> dict:
    """What the same growth costs by hand on this machine (2 cores carry every lab host): the
    floor's rollout on 7 hosts at once against 1, and a fresh ssh + sudo to 8 hosts at once
    against 2 (a converge's least work). What rig cannot go below as hosts are added."""
    say("   the same by hand: the floor on 7 hosts at once vs 1; ssh + sudo to 8 vs 2")
    repository = f"10.77.0.1:5000/rig/{SERVICE}"
    seven = HOSTS8[1:]
    for host in seven:
        ssh(host, f"docker stop rig-{SERVICE} >/dev/null; docker rm -f floor-a floor-b "
                  f">/dev/null 2>&1; {floor_run(repository, digests['bench-1'], 'floor-a', host)}"
                  " >/dev/null")
    walls: dict[int, list[float]] = {1: [], 7: []}
    try:
        for i in range(2 * RUNS):   # one host and seven in turn, each flipping its container
            count = (1, 7)[i % 2]
            for j in range(2):
                old, new = ("floor-a", "floor-b") if j == 0 else ("floor-b", "floor-a")
                digest = digests[("bench-2", "bench-1")[j]]
                wall = ssh_all({h: floor_script(repository, digest, old, new, h)
                                for h in seven[:count]})
                if j == 0:
                    walls[count].append(wall)
    finally:
        for host in seven:
            ssh(host, f"docker rm -f floor-a floor-b >/dev/null 2>&1; "
                      f"docker start rig-{SERVICE} >/dev/null")
    logins = {n: [ssh_all({h: "true" for h in HOSTS8[:n]}) for _ in range(RUNS)] for n in (2, 8)}
    result = {"floor_wave7": stats(walls[7]), "floor_wave1": stats(walls[1]),
              "ssh_8": stats(logins[8]), "ssh_2": stats(logins[2])}
    result["floor_wave7_over_wave1"] = round(result["floor_wave7"]["median"]
                                             / result["floor_wave1"]["median"], 2)
    result["ssh_8_over_2"] = round(result["ssh_8"]["median"] / result["ssh_2"]["median"], 2)
    return result


def settle(spec: Path, limit: str) -> None:
    """Every chosen host on bench-1, untimed, so that a series alternating bench-2 and bench-1
    changes the service on every host in every run (a run with nothing to do is not a sample)."""
    run([*RIG, "-c", str(spec / "fleet.yml"), "rollout", "--tag", "bench-1", "--services",
         SERVICE, "--limit", limit, "--canary", limit.split(",")[0], "--batch", "100%",
         "--no-verify"], cwd=spec)


def bench_memory(spec: Path) -> dict:
    """rig's peak resident memory (its process and children) in a rollout to 8 hosts."""
    say("   rig's peak memory in a one-service rollout to 8 hosts")
    argv = [*RIG, "-c", str(spec / "fleet.yml"), "rollout", "--services", SERVICE, "--limit",
            ",".join(HOSTS8), "--canary", "mainpc", "--batch", "2", "--no-verify"]
    peaks = []
    for i in range(RUNS):
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
        out = run([sys.executable, "-c", probe, *argv, "--tag", ("bench-2", "bench-1")[i % 2]],
                  cwd=spec).stdout
        peaks.append(int(out.strip().splitlines()[-1]) / 1024)
    return {"rollout_8_hosts_mib": stats(peaks), "peak_mib": round(max(peaks), 1)}


# -- 5. three services on one host -----------------------------------------------------------
def bench_three(spec: Path) -> dict:
    say("5. rollout to mainpc: three changed services vs one changed service (gates in one loop)")
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    three = ",".join(SERVICES3)
    run([*rig_spec, "rollout", "--tag", "bench-1", "--services", three, "--limit", "mainpc",
         "--no-verify"], cwd=spec)
    ones, threes = [], []
    for i in range(RUNS):  # three: bench-3 and bench-1 in turn; one: to bench-2 from either
        threes.append(timed([*rig_spec, "rollout", "--tag", ("bench-3", "bench-1")[i % 2],
                             "--services", three, "--limit", "mainpc", "--no-verify"], cwd=spec,
                            expect="3 service"))
        ones.append(timed([*rig_spec, "rollout", "--tag", "bench-2", "--services", SERVICE,
                           "--limit", "mainpc", "--no-verify"], cwd=spec, expect="1 service"))
    for service in SERVICES3[:2]:  # back to one running service for the rest
        ssh("mainpc", f"docker rm -f rig-{service} rig-{service}-prev >/dev/null 2>&1 || true")
    result = {"one": stats(ones), "three": stats(threes)}
    result["three_over_one"] = round(result["three"]["median"] / result["one"]["median"], 2)
    return result


# -- 4. no-change build -----------------------------------------------------------------------
def bench_build(spec: Path) -> dict:
    say("4. rig build --push with every image already in the registry")
    rig_spec = [*RIG, "-c", str(spec / "fleet.yml")]
    samples = [registry_requests([*rig_spec, "build", "--push", "--allow-dirty", "--tag", "bench-1"],
                                 cwd=spec, expect="built 0, tagged 0, present 5") for _ in range(RUNS)]
    # the same without signing (the lab's spec signs): a no-change build must not pay for it
    lab_yml = spec / "lab.yml"
    signed = lab_yml.read_text()
    assert "    key: .lab/signing/cosign.key\n" in signed
    try:
        lab_yml.write_text(signed.replace("    key: .lab/signing/cosign.key\n", ""))
        unsigned = [timed([*rig_spec, "build", "--push", "--allow-dirty", "--tag", "bench-1"],
                          cwd=spec, expect="built 0, tagged 0, present 5") for _ in range(RUNS)]
    finally:
        lab_yml.write_text(signed)
    result = {"rig": stats([seconds for seconds, _ in samples]),
              "registry_requests": max(requests for _, requests in samples),
              "unsigned": stats(unsigned)}
    result["signing_cost_s"] = round(result["rig"]["median"] - result["unsigned"]["median"], 3)
    return result


def table(results: dict) -> str:
    c, r, s, b, m, n = (results[k] for k in ("converge", "rollout", "scale", "build", "memory",
                                              "connections"))
    fmt = lambda x: f"{x['median']:.2f} s ({x['min']:.2f}-{x['max']:.2f})"  # noqa: E731
    lines = [f"rig bench, {RUNS} runs each, median (min-max)", "",
             "1. no-change converge, mainpc + pc2",
             f"   rig bootstrap        {fmt(c['rig'])}",
             f"   ansible-playbook     {fmt(c['ansible'])}",
             f"   Ansible / rig        {c['ansible_over_rig']:.2f}x", "",
             "2. rollout of one service to one host",
             f"   rig rollout          {fmt(r['rig'])}",
             f"   floor (by hand)      {fmt(r['floor'])}   (to first healthy answer "
             f"{r['floor_to_healthy']['median']:.2f} s)",
             f"   floor by hand, from here (fresh ssh, sudo)  {fmt(r['floor_by_hand'])}",
             f"   rig / floor          {r['rig_over_floor']:.2f}x (in-host);   rig / by hand "
             f"{r['rig_over_floor_by_hand']:.2f}x",
             f"   ansible-playbook     {fmt(r['ansible'])}   Ansible / rig "
             f"{r['ansible_over_rig']:.2f}x",
             f"   where rig's time goes: CLI start-up {r['rig_startup']['median']:.2f} s; "
             f"connect + pre-flight facts {r['rig_preflight']['median']:.2f} s;",
             f"     locks {r['rig_locks']['median']:.2f} s; wave steps (pull/stop/run, "
             f"ledger, clean-up) {r['rig_wave_steps']['median']:.2f} s;",
             f"     health gate polling {r['rig_gate']['median']:.2f} s; the rest "
             f"(imports, spec, registry digests) {r['rig_other']:.2f} s", "",
             "3. scale (canary 1, batch 2)      converge            rollout"]
    for count in ("2", "4", "8"):
        row = s[count]
        lines.append(f"   {count} hosts              {fmt(row['converge']):<22} {fmt(row['rollout'])}")
    lines += [f"   converge 8 / 2 hosts  {s['converge_8_over_2']:.2f}x",
              f"   one wave of 7 hosts   {fmt(s['wave7'])}; of 1 host {fmt(s['wave1'])}; "
              f"7 / 1 {s['wave7_over_wave1']:.2f}x",
              f"   by hand, the floor on 7 hosts at once {fmt(s['floor_wave7'])}; on 1 "
              f"{fmt(s['floor_wave1'])}; 7 / 1 {s['floor_wave7_over_wave1']:.2f}x",
              f"   by hand, ssh + sudo to 8 hosts at once {fmt(s['ssh_8'])}; to 2 "
              f"{fmt(s['ssh_2'])}; 8 / 2 {s['ssh_8_over_2']:.2f}x",
              f"   rig's CPU here, wave of 1 / of 7: {s['cpu_wave1']['median']:.2f} / "
              f"{s['cpu_wave7']['median']:.2f} s; each more host {s['cpu_per_extra_host']:.3f} s",
              f"   rig's peak memory, 8-host rollout: {m['peak_mib']:.0f} MiB", "",
              "4. no-change build", f"   rig build --push     {fmt(b['rig'])}, "
              f"{b['registry_requests']} registry requests",
              f"   without signing      {fmt(b['unsigned'])}; signing adds "
              f"{b['signing_cost_s']:+.2f} s (target within 0.3 s)", "",
              "5. rollout to one host, three changed services vs one",
              f"   three                {fmt(r['three'])}",
              f"   one                  {fmt(r['one'])}",
              f"   three / one          {r['three_over_one']:.2f}x", "",
              "6. on mainpc, per command: SSH connections / commands under sudo",
              *(f"   {what:<20} {n[what]['connections']} / {n[what]['sudo_commands']}"
                for what in ("rollout", "converge", "status"))]
    return "\n".join(lines)


SECTIONS = ("converge", "rollout", "three", "scale", "memory", "build", "connections")


def main() -> None:
    """Every section, or only those RIG_BENCH_ONLY names (comma-separated, for a quicker look
    at one figure: then results.json is not written, and the figures print as JSON)."""
    only = [s for s in os.environ.get("RIG_BENCH_ONLY", "").split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        sys.exit(f"RIG_BENCH_ONLY: no section {', '.join(unknown)} (sections: {', '.join(SECTIONS)})")
    wanted = lambda name: not only or name in only  # noqa: E731
    started = time.monotonic()
    spec, digests = setup()
    results = {"runs": RUNS, "tcp_nodelay": os.environ.get("RIG_TCP_NODELAY", "1") != "0"}
    if wanted("converge"):
        results["converge"] = bench_converge(["mainpc", "pc2"])
    if wanted("rollout"):
        results["rollout"] = bench_rollout(spec, digests)
    if wanted("three"):
        results.setdefault("rollout", {}).update(bench_three(spec))
    if wanted("scale"):
        results["scale"] = bench_scale(spec, digests)
    for name, section in (("memory", bench_memory),
                          ("build", bench_build), ("connections", bench_connections)):
        if wanted(name):
            results[name] = section(spec)
    say("")
    if only:
        say(json.dumps(results, indent=2))
    else:
        (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        say(table(results))
        say("\nbench/results.json written")
    say(f"{time.monotonic() - started:.0f} s in all")


if __name__ == "__main__":
    main()
