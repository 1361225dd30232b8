"""Service containers on a host, as shell commands (pure): run, replace, restore, probe, lock.

A service runs as the container rig-<service>. While a new version is gated the previous one is
kept, stopped, as rig-<service>-prev; it goes when the rollout has finished."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..config import Fleet
from .base import Cmd, all_of, capture, decode_to, no_stderr, ok, pipe, quiet, seq, sh, subshell
from .host import PROFILE_ENV, PROFILE_HASH, PROFILE_JSON

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
                     has_previous: bool) -> list[Cmd]:
    """Pull by digest, keep the running container as -prev (stopped), start the new one."""
    name, prev = current(release.service), previous(release.service)
    commands = [sh("docker", "pull", "-q", release.pinned)]
    if has_previous:
        commands.append(sh("docker", "rm", "-f", prev))
    if has_current:
        commands.append(all_of(sh("docker", "stop", "-t", int(fleet.rollout.stop_timeout), name),
                               sh("docker", "rename", name, prev)))
    commands.append(sh(*run_argv(fleet, host, release)))
    return commands


def restore_commands(service: str, has_previous: bool) -> list[Cmd]:
    """Back to the kept container: the failed one goes, the previous one starts again. With
    nothing kept (the first rollout of this service) the host goes back to running nothing."""
    name, prev = current(service), previous(service)
    commands = [ok(quiet(sh("docker", "rm", "-f", name)))]
    if has_previous:
        commands.append(all_of(sh("docker", "rename", prev, name), sh("docker", "start", name)))
    return commands


def remove_containers(names: list[str]) -> Cmd:
    return sh("docker", "rm", "-f", *names)


FAST_POLL = 0.1    # seconds between probes until the first 2xx answer ...
FAST_PROBES = 30   # ... for at most this many probes (3 s), then the spec's interval


def probe_once(service: str, port: int, path: str, timeout: float) -> Cmd:
    """The host-side half of one health probe: the container's state and one GET of the health
    endpoint, as one line `probe <epoch> <state>:<exit code>:<restarts> <http code> <base64 body>`.
    rig runs it once per probe and judges the answers (rollout/gate.py)."""
    url = f"http://127.0.0.1:{port}{path}"
    state = pipe(no_stderr(sh("docker", "inspect", "-f",
                              "{{.State.Status}}:{{.State.ExitCode}}:{{.RestartCount}}",
                              current(service))),
                 sh("head", "-n", "1"))
    fetch = ok(sh("curl", "-s", "-o", Cmd('"$f"'), "-m", f"{timeout:g}", "-w", "%{http_code}", url))
    return seq(
        Cmd("s=$(" + state.line + ")"), Cmd('[ -n "$s" ] || s=missing:0:0'),
        Cmd("f=$(mktemp)"), Cmd("c=$(" + fetch.line + ")"),
        Cmd('echo "probe $(date +%s.%N) $s $c $(head -c 4096 "$f" | base64 -w0)"'),
        Cmd('rm -f "$f"'),
    )


def logs_command(service: str, lines: int = 12) -> Cmd:
    return Cmd(f"{sh('docker', 'logs', '--tail', lines, current(service)).line} 2>&1")


def containers_command() -> Cmd:
    """One line per rig container: name, state, and the labels rig set."""
    fields = "\t".join(["{{.Names}}", "{{.State}}", '{{.Label "rig.service"}}',
                         '{{.Label "rig.tag"}}', '{{.Label "rig.digest"}}',
                         '{{.Label "rig.profile-hash"}}'])
    return sh("docker", "ps", "-a", "--filter", "label=rig.service", "--format", fields)


def rollout_state_command() -> Cmd:
    """The RolloutState fact: engine, profile hash, rig's containers, state.json, lock."""
    def section(title: str, body: Cmd) -> Cmd:
        return seq(sh("echo", f"--- {title}"), ok(no_stderr(body)))
    return seq(section("docker", sh("systemctl", "is-active", "docker")),
               section("profile", sh("cat", PROFILE_HASH)),
               section("containers", containers_command()),
               section("state", sh("cat", STATE_FILE)),
               section("lock", sh("cat", LOCK_FILE)))


def lock_take(holder: dict) -> Cmd:
    """Create the lock only if absent (noclobber); print TAKEN, or HELD and the holder."""
    content = json.dumps(holder, sort_keys=True).encode()
    create = subshell(seq(Cmd("set -C"), decode_to(content, LOCK_FILE)))
    return all_of(
        sh("install", "-d", "-m", "0755", STATE_DIR),
        Cmd(f"if {create.line} 2>/dev/null; then echo TAKEN; "
            f"else echo HELD; {sh('cat', LOCK_FILE).line}; fi", compound=True),
    )


def lock_refresh(holder: dict) -> Cmd:
    """Rewrite our own lock (same id) with a new heartbeat; someone else's is left alone."""
    member = json.dumps({"id": holder["id"]})[1:-1]
    content = json.dumps(holder, sort_keys=True).encode()
    return ok(all_of(sh("grep", "-qF", "--", member, LOCK_FILE),
                     decode_to(content, LOCK_FILE + ".new"),
                     sh("mv", LOCK_FILE + ".new", LOCK_FILE)))


def lock_break() -> Cmd:
    return sh("rm", "-f", LOCK_FILE)


def lock_release(holder_id: str) -> Cmd:
    """Remove the lock only if it is ours: the whole `"id": "<id>"` member lock_take wrote,
    compared as a fixed string (json.dumps escapes the same way both times, so an operator
    named `Zoë` or `ops [ci]` releases exactly their own lock)."""
    member = json.dumps({"id": holder_id})[1:-1]  # "id": "<id>" exactly as json.dumps wrote it
    return ok(all_of(sh("grep", "-qF", "--", member, LOCK_FILE), sh("rm", "-f", LOCK_FILE)))


def ledger_tail(lines: int) -> Cmd:
    """The last lines of the host's ledger (nothing when it has none)."""
    return ok(no_stderr(sh("tail", "-n", int(lines), LEDGER)))


def append_ledger(entries: list[dict]) -> Cmd:
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    return all_of(sh("install", "-d", "-m", "0755", STATE_DIR),
                  decode_to(lines.encode(), LEDGER, append=True))


def status_probe(fleet: Fleet, services: list[str]) -> Cmd:
    """One GET of each service's health endpoint: `<service> <body>` lines."""
    parts = []
    for service in services:
        spec = fleet.services[service]
        url = f"http://127.0.0.1:{spec.port}{spec.health.path}"
        body = pipe(sh("curl", "-s", "-m", "2", url), sh("head", "-c", "2048"), sh("tr", "-d", "\n"))
        parts.append(sh("echo", Cmd(shlex.quote(service) + " " + capture(body).line)))
    return seq(*parts)
