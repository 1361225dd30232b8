"""Rollout work on one host: read what runs, start a release, gate it, restore, record.

The orchestration (rig/rollout/engine.py) adds these for one wave at a time; hosts outside the
wave get no operations."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FactBase, FunctionCommand, deploy, operation

from rig.commands import container as cmd
from rig.commands.base import write_file
from rig.rollout.gate import GateJudge, Verdict

from .util import fleet_of, host_shell


@dataclass
class Container:
    name: str
    state: str
    service: str
    tag: str
    digest: str
    profile_hash: str
    config_hash: str = ""
    config: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class RolloutFacts:
    docker_active: bool = False
    profile_hash: str | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    state: dict = field(default_factory=dict)      # /var/lib/rig/state.json
    lock: dict | None = None                       # /var/lib/rig/rollout.lock
    warnings: list[str] = field(default_factory=list)

    def running(self, service: str) -> Container | None:
        found = self.containers.get(cmd.current(service))
        return found if found and found.running else None


def parse_rollout_facts(lines: list[str]) -> RolloutFacts:
    facts, section, chunks = RolloutFacts(), None, {"state": [], "lock": []}
    for line in lines:
        if line.startswith("--- "):
            section = line[4:].strip()
            continue
        if section == "docker":
            facts.docker_active = line.strip() == "active"
        elif section == "profile" and line.strip():
            facts.profile_hash = line.strip()
        elif section == "containers" and line.strip():
            parts = line.rstrip("\n").split("\t")
            if 6 <= len(parts) <= 8:  # labels rig did not set print as nothing
                facts.containers[parts[0]] = Container(*parts)
        elif section in chunks:
            chunks[section].append(line)
    for name in ("state", "lock"):
        text = "\n".join(chunks[name]).strip()
        if text:
            try:
                value = json.loads(text)
            except ValueError:
                value = {"unreadable": text[:200]}
            if name == "state":
                facts.state = value if _state_shape(value) else _from_labels(facts, text)
            else:
                facts.lock = value
    return facts


def _state_shape(value) -> bool:
    return isinstance(value, dict) and "unreadable" not in value and all(
        isinstance(v, dict) and isinstance(v.get("digest"), str) for v in value.values())


def _from_labels(facts: RolloutFacts, text: str) -> dict:
    """state.json unreadable: rebuilt from what runs (the containers' labels), with a warning;
    the next record writes it whole again."""
    facts.warnings.append(f"state.json was unreadable ({text[:60]!r}...): rebuilt from the "
                          "running containers' labels")
    return {c.service: {"tag": c.tag, "digest": c.digest, "profile_hash": c.profile_hash,
                        "config_hash": c.config_hash or None, "since": None, "previous": None}
            for name, c in facts.containers.items() if c.running and name == cmd.current(c.service)}


class RolloutState(FactBase):
    """Engine state, profile hash, rig's containers, state.json and the lock: one round trip."""

    def command(self) -> str:
        return cmd.rollout_state_command()

    def process(self, output) -> RolloutFacts:
        return parse_rollout_facts(list(output))


# -- operations -------------------------------------------------------------------------------
@operation()
def release_running(release: cmd.Release, secrets: dict | None = None):
    """rig-<service> runs release.digest with the current profile and settings (config hash);
    the container it replaces is kept stopped as rig-<service>-prev until the rollout finishes.
    The service's secrets are written first, each value on stdin.

    + release: what to run
    + secrets: name -> rig.secrets.Secret
    """
    facts = host.get_fact(RolloutState)
    running = facts.running(release.service)
    if running and running.digest == release.digest and running.profile_hash == release.profile_hash \
            and running.config_hash == release.config_hash:
        host.noop(f"{release.service} already runs {release.tag}")
        return
    name = cmd.current(release.service)
    for secret_name, secret in sorted((secrets or {}).items()):
        yield FunctionCommand(_write_secret, (release.service, secret_name, secret), {})
    yield from cmd.replace_commands(fleet_of(host), host.name, release,
                                    has_current=name in facts.containers,
                                    has_previous=cmd.previous(release.service) in facts.containers)


def _write_secret(state, host, service: str, name: str, secret) -> bool:
    """One secret to /etc/rig/secrets/<service>/<name>: the value on stdin, never in argv."""
    encoded = base64.b64encode(secret.value.encode()).decode()
    result = host_shell(host, cmd.write_secret(service, name), stdin=encoded, timeout=30)
    if not result.ok:
        from pyinfra import logger

        logger.error(f"{host.print_prefix}could not write secret {name} of {service}: "
                     f"{' '.join(result.stderr[-1:])}")
    return result.ok


@operation(is_idempotent=False)
def health_gate(services: list[str], results: dict, allow_missing: tuple = (), abort=None,
                hold: float | None = None):
    """Probe the services on the host, all in one loop (one round trip per round), until each
    gate passes or one fails (see rollout/gate.py).

    + services: the services to gate, each judged by its own health settings
    + results: (host, service) -> Verdict, filled in for the orchestration's report
    + allow_missing: services for which no container passes (restored to "nothing")
    + abort: an Event; once set (a second Ctrl-C) the gates fail at their next probe
    + hold: watch already healthy services this long instead (a canary pause): no start
      period, `retries` bad answers in a row fail it
    """
    yield FunctionCommand(_gate, (list(services), results, tuple(allow_missing), abort, hold), {})


STOPPED = "stopped by a second signal"


def _gate(state, host, services: list[str], results: dict, allow_missing: tuple = (),
          abort=None, hold: float | None = None) -> bool:
    """Probe every service each round (one command), feed each judge its own answer, until
    every gate has passed or one has failed; a failed one's last log lines are kept."""
    fleet = fleet_of(host)
    specs = {s: fleet.services[s] for s in services}
    judges = {s: GateJudge(spec.health.model_copy(update={"start_period": 0.0}), hold) if hold
              else GateJudge(spec.health, fleet.rollout.min_healthy) for s, spec in specs.items()}
    round_trip = cmd.probe_services([(s, spec.port, spec.health.path, spec.health.timeout)
                                     for s, spec in specs.items()])
    timeout = max(spec.health.timeout for spec in specs.values()) + 10
    started, origins, fast = time.monotonic(), {}, 0
    verdicts: dict[str, Verdict] = {}
    while len(verdicts) < len(services) and not any(not v.passed for v in verdicts.values()):
        if abort is not None and abort.is_set():  # the operator insists: no more waiting
            verdicts.update({s: Verdict(False, STOPPED) for s in services if s not in verdicts})
            break
        answer = host_shell(host, round_trip, timeout=timeout)
        probes = cmd.parse_probes(answer.stdout) if answer.ok else {}
        quick = False
        for service in (s for s in services if s not in verdicts):
            probe = probes.get(service)
            if probe is None:
                what = " ".join(answer.stderr[-2:]) or answer.stdout.strip()[:200] or "no output"
                verdicts[service] = Verdict(False, f"probe failed on the host: {what}")
                continue
            origins.setdefault(service, probe.t)  # host and control clocks differ
            probe.t -= origins[service]
            if probe.state == "missing" and service in allow_missing:
                verdicts[service] = Verdict(True, "no container (none ran before)")
                continue
            verdict = judges[service].feed(probe)
            if verdict is not None:
                verdict.elapsed = round(time.monotonic() - started, 2)
                verdicts[service] = verdict
            quick |= probe.code // 100 != 2
        fast += 1
        if len(verdicts) < len(services) and all(v.passed for v in verdicts.values()):
            waiting = [specs[s].health.interval for s in services if s not in verdicts]
            time.sleep(min([cmd.FAST_POLL, *waiting]) if quick and fast < cmd.FAST_PROBES
                       else min(waiting))
    for service in services:
        verdict = verdicts.get(service) or Verdict(False, "not judged: another service's gate "
                                                   "failed first")
        verdict.elapsed = verdict.elapsed or round(time.monotonic() - started, 2)
        if not verdict.passed:
            verdict.logs = host_shell(host, cmd.logs_command(service), timeout=30).stdout.splitlines()
        results[(host.name, service)] = verdict
    return all(results[(host.name, s)].passed for s in services)


def needs_restore(facts: RolloutFacts, service: str, before: dict | None) -> bool:
    """Whether a service is off the version it ran before the rollout (or was not running)."""
    running = facts.running(service)
    if before is None:
        return cmd.current(service) in facts.containers
    return running is None or running.digest != before["digest"] or (
        before.get("config_hash") is not None and running.config_hash != before["config_hash"])


@operation()
def release_restored(service: str, before: dict | None):
    """rig-<service> runs what it ran before the rollout: the kept container (-prev) starts
    again; with nothing before (a first rollout) the service is not running.

    + service: the service to restore
    + before: {tag, digest} it ran before, or None
    """
    facts = host.get_fact(RolloutState)
    if not needs_restore(facts, service, before):
        host.noop(f"{service} already runs its previous version")
        return
    has_previous = cmd.previous(service) in facts.containers
    if before is not None and not has_previous:
        yield cmd.fail(f"{service}: no kept container to go back to {before['tag']}")
        return
    yield from cmd.restore_commands(service, has_previous)


@operation()
def previous_removed(services: list[str]):
    """No rig-<service>-prev containers are left once a rollout has finished.

    + services: services whose kept containers go
    """
    facts = host.get_fact(RolloutState)
    kept = [cmd.previous(s) for s in services if cmd.previous(s) in facts.containers]
    if not kept:
        host.noop("no previous containers kept")
        return
    yield cmd.remove_containers(kept)


@operation(is_idempotent=False)
def ledger_recorded(entries: list[dict], state_doc: dict):
    """Append entries to /var/lib/rig/ledger.jsonl and write /var/lib/rig/state.json.

    + entries: ledger lines for this host
    + state_doc: the host's new current-state document
    """
    if not entries:
        host.noop("nothing to record")
        return
    yield cmd.append_ledger(entries)
    yield write_file(cmd.STATE_FILE, json.dumps(state_doc, indent=2, sort_keys=True) + "\n", "0644")


# -- deploys the orchestration adds, one wave at a time ---------------------------------------
@deploy("Roll out")
def roll_out(releases: dict, results: dict, abort=None, secrets: dict | None = None):
    """secrets: service -> {name: Secret}, for the services that have any."""
    mine = releases.get(host.name, [])
    for release in mine:
        release_running(name=f"{release.service}: run {release.tag}", release=release,
                        secrets=(secrets or {}).get(release.service))
    if mine:  # every started service gated at once: min_healthy is paid once per host
        health_gate(name="health gates", services=[r.service for r in mine], results=results,
                    abort=abort)


@deploy("Watch the canary")
def watch(services: dict, results: dict, hold: float, abort=None):
    """services: host -> services to keep watching for `hold` seconds (a timed canary pause)."""
    if services.get(host.name):
        health_gate(name=f"watch {hold:g} s", services=services[host.name], results=results,
                    abort=abort, hold=hold)


@deploy("Roll back")
def roll_back(services: dict, results: dict):
    """services: host -> {service: what it ran before (or None)}. Only services that are off
    their previous version get operations (read now, after the failed wave)."""
    wanted = services.get(host.name, {})
    if not wanted:
        return
    facts = host.get_fact(RolloutState)
    restored = [s for s, before in wanted.items() if needs_restore(facts, s, before)]
    for service in restored:
        release_restored(name=f"{service}: restore previous", service=service,
                         before=wanted[service])
    if restored:
        health_gate(name="health gates (restored)", services=restored, results=results,
                    allow_missing=tuple(s for s in restored if wanted[s] is None))


@deploy("Record")
def record(entries: dict, states: dict, finished: dict):
    if host.name in finished:
        previous_removed(name="remove kept containers", services=finished[host.name])
    if host.name in entries:
        ledger_recorded(name="ledger and state", entries=entries[host.name],
                        state_doc=states[host.name])
