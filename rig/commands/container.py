"""Service containers on a host, as shell commands (pure): run, replace, restore, probe, lock.

A service runs as the container rig-<service>. While a new version is gated the previous one is
kept, stopped, as rig-<service>-prev; it goes when the rollout has finished."""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import dataclass

from ..config import Fleet
from .host import PROFILE_ENV, PROFILE_JSON

STATE_DIR = "/var/lib/rig"
LEDGER = f"{STATE_DIR}/ledger.jsonl"
STATE_FILE = f"{STATE_DIR}/state.json"
LOCK_FILE = f"{STATE_DIR}/rollout.lock"


def current(service: str) -> str:
    return f"rig-{service}"


def previous(service: str) -> str:
    return f"rig-{service}-prev"


@dataclass(frozen=True)
class Release:
    """What one host should run for one service."""
    service: str
    tag: str
    repository: str
    digest: str
    profile_hash: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


def run_argv(fleet: Fleet, host: str, release: Release) -> list[str]:
    """docker run for a service: host network, the machine profile's env file and JSON, the
    service's volumes and env, GPUs where rig manages one, labels saying what runs."""
    spec = fleet.services[release.service]
    argv = ["docker", "run", "-d", "--name", current(release.service), "--network", "host",
            "--restart", "unless-stopped",
            "--stop-timeout", str(int(fleet.rollout.stop_timeout)),
            "--env-file", PROFILE_ENV, "-v", f"{PROFILE_JSON}:{PROFILE_JSON}:ro"]
    for key, value in sorted(spec.env.items()):
        argv += ["-e", f"{key}={value}"]
    for volume in spec.volumes:
        argv += ["-v", volume]
    if spec.gpu and fleet.gpu_enabled(host):
        argv += ["--gpus", "all"]
    for key, value in (("rig.service", release.service), ("rig.tag", release.tag),
                       ("rig.digest", release.digest), ("rig.profile-hash", release.profile_hash)):
        argv += ["--label", f"{key}={value}"]
    argv.append(release.pinned)
    return argv


def replace_commands(fleet: Fleet, host: str, release: Release, has_current: bool,
                     has_previous: bool) -> list[str]:
    """Pull by digest, keep the running container as -prev (stopped), start the new one."""
    name, prev = current(release.service), previous(release.service)
    commands = [f"docker pull -q {shlex.quote(release.pinned)}"]
    if has_previous:
        commands.append(f"docker rm -f {prev}")
    if has_current:
        commands.append(f"docker stop -t {int(fleet.rollout.stop_timeout)} {name} && "
                        f"docker rename {name} {prev}")
    commands.append(" ".join(shlex.quote(a) for a in run_argv(fleet, host, release)))
    return commands


def restore_commands(service: str, has_previous: bool) -> list[str]:
    """Back to the kept container: the failed one goes, the previous one starts again. With
    nothing kept (the first rollout of this service) the host goes back to running nothing."""
    name, prev = current(service), previous(service)
    commands = [f"docker rm -f {name} >/dev/null 2>&1 || true"]
    if has_previous:
        commands.append(f"docker rename {prev} {name} && docker start {name}")
    return commands


FAST_POLL = 0.1    # seconds between probes until the first 2xx answer ...
FAST_PROBES = 30   # ... for at most this many probes (3 s), then the spec's interval


def probe_loop(service: str, port: int, path: str, interval: float, timeout: float) -> str:
    """The host-side half of the health gate: the container's state and one GET of the health
    endpoint per probe (every FAST_POLL until the first 2xx, so a service that comes up is seen
    within 0.1 s; then every interval), as
    `probe <epoch> <state>:<exit code>:<restarts> <http code> <base64 body>`.
    It runs until rig closes the connection (rig decides; see rollout/gate.py)."""
    url = f"http://127.0.0.1:{port}{path}"
    inspect = (f"docker inspect -f '{{{{.State.Status}}}}:{{{{.State.ExitCode}}}}:{{{{.RestartCount}}}}' "
               f"{current(service)} 2>/dev/null | head -n 1")
    return (
        f"f=$(mktemp) && trap 'rm -f $f' EXIT && i=0 && w={min(FAST_POLL, interval):g} && while :; do "
        f"s=$({inspect}); [ -n \"$s\" ] || s=missing:0:0; "
        f"c=$(curl -s -o $f -m {timeout:g} -w '%{{http_code}}' {shlex.quote(url)} || true); "
        # rig closes the connection once it has decided: the next echo fails and the loop ends
        f"echo \"probe $(date +%s.%N) $s $c $(head -c 4096 $f | base64 -w0)\" || exit 0; "
        f"i=$((i+1)); case $c in 2??) w={interval:g};; esac; "
        f"[ $i -ge {FAST_PROBES} ] && w={interval:g}; sleep $w; done"
    )


def logs_command(service: str, lines: int = 12) -> str:
    return f"docker logs --tail {lines} {current(service)} 2>&1"


def containers_command() -> str:
    """One line per rig container: name, state, and the labels rig set."""
    fields = "\\t".join(["{{.Names}}", "{{.State}}", '{{.Label "rig.service"}}',
                         '{{.Label "rig.tag"}}', '{{.Label "rig.digest"}}',
                         '{{.Label "rig.profile-hash"}}'])
    return f"docker ps -a --filter label=rig.service --format '{fields}'"


def lock_take(holder: dict) -> str:
    """Create the lock only if absent (noclobber); print TAKEN, or HELD and the holder."""
    content = base64.b64encode(json.dumps(holder, sort_keys=True).encode()).decode()
    return (f"install -d -m 0755 {STATE_DIR} && "
            f"if ( set -C; printf %s {content} | base64 -d > {LOCK_FILE} ) 2>/dev/null; "
            f"then echo TAKEN; else echo HELD; cat {LOCK_FILE}; fi")


def lock_release(holder_id: str) -> str:
    """Remove the lock only if it is ours."""
    return (f"grep -q {shlex.quote(holder_id)} {LOCK_FILE} 2>/dev/null && rm -f {LOCK_FILE} || true")


def append_ledger(entries: list[dict]) -> str:
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    encoded = base64.b64encode(lines.encode()).decode()
    return f"install -d -m 0755 {STATE_DIR} && printf %s {encoded} | base64 -d >> {LEDGER}"


def status_probe(fleet: Fleet, services: list[str]) -> str:
    """One GET of each service's health endpoint: `<service> <body>` lines."""
    parts = []
    for service in services:
        spec = fleet.services[service]
        url = shlex.quote(f"http://127.0.0.1:{spec.port}{spec.health.path}")
        parts.append(f"echo \"{service} $(curl -s -m 2 {url} | head -c 2048 | tr -d '\\n')\"")
    return "; ".join(parts)
