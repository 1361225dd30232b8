"""A fake fleet for the rollout core: a session that answers like hosts do, and fails every way a
host can. It keeps per host the containers, state.json and the lock file, runs the lock
scripts' rules (commands/lock.py) on that file, answers health probes from a script per
service, and keeps time on a fake clock the gate loop sleeps on.

Faults: a gate that never passes (failing), a canary that degrades during its pause
(watch_fails), a service that loads for a while (loading), a failed pull (pull_fails), a host
lost in its wave (lost_in_wave), a probe that times out (frozen), a rollback that fails
(rollback_fails), a ledger write that fails (record_fails), a lock held by someone else (held)
or malformed (lock_files), a proxy that will not switch (switch_fails; a stray container that
will not go fails with it).

Behind the proxy each container has a slot: a start_first swap keeps the old one running as
-prev beside the new one, and `switches` lists every switch of a host's proxy, (host,
service, slot, digest of the container it now sends to), so a test can say who served; and
`restores` lists each restore, (host, service, warm or cold)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shlex
from pathlib import Path

from rig.commands import container as cmd
from rig.commands import proxy as proxy_cmd
from rig.commands.lock import LOCK_FILE
from rig.errors import RigError
from rig.rollout.strategy import START_FIRST, strategy_for
from rig.runner import HostResult
from tasks.control import control
from tasks.rollout import (
    SWITCH_STEP,
    Container,
    RolloutFacts,
    RolloutState,
    back_under_own_name,
    needs_restore,
    next_slot,
    record,
    restore_way,
    roll_back,
    roll_out,
    settle,
    switch,
)
from tasks.util import Shell

OK_BODY = '{"status": "ok"}'
PROXY_WORDS = {"live": "UP", "drain": "DRAIN", "maint": "MAINT"}   # as HAProxy's stats say
PROBE = re.compile(r"printf '%s ' ([a-z0-9_.-]+);")


def container_of(release, state="running", slot="a") -> Container:
    return Container(cmd.current(release.service), state, release.service, release.tag,
                     release.digest, release.profile_hash, release.config_hash, release.config,
                     slot)


class FakeSession:
    def __init__(self, fleet, hosts, failing=(), held=(), pull_fails=(), record_fails=(),
                 watch_fails=(), lost_in_wave=(), rollback_fails=(), frozen=(), loading=None,
                 lock_files=None, start=1_700_000_000.0, checks_fail_until=None,
                 switch_fails=()):
        self.fleet, self.hosts = fleet, list(hosts)
        self.failing, self.watch_fails = set(failing), set(watch_fails)
        self.pull_fails, self.record_fails = set(pull_fails), set(record_fails)
        self.lost_in_wave, self.rollback_fails = set(lost_in_wave), set(rollback_fails)
        self.frozen = set(frozen)
        self.switch_fails = set(switch_fails)
        self.switches: list[tuple[str, str, str, str]] = []
        self.restores: list[tuple[str, str, str]] = []   # (host, service, warm|cold)
        self.loading = dict(loading or {})      # (host, service) -> seconds of 503 loading
        # (host, service) -> seconds after start until its gate checks pass (inf: never)
        self.checks_fail_until = dict(checks_fail_until or {})
        self.kernel_log: dict[str, str] = {}     # host -> what journalctl -k prints
        self.gpu_memory: dict[str, str] = {}     # host -> nvidia-smi's memory.used,memory.total
        self.now = start
        self.facts_by_host = {h: RolloutFacts(docker_active=True,
                                              profile_hash=fleet.profile_of(h).content_hash(),
                                              proxy={s: {"a": "maint", "b": "maint"}
                                                     for s in fleet.services_on(h)})
                              for h in hosts}
        self.lock_files: dict[str, bytes | None] = {h: None for h in hosts}
        for h in held:
            self.lock_files[h] = json.dumps({"operator": "bo@x", "since": 1, "pid": 7,
                                             "id": "bo@x-1"}).encode()
        self.lock_files.update(lock_files or {})
        self.started: dict[tuple[str, str], float] = {}
        self.runs: list[tuple[str, list[str], dict]] = []
        self.commands: list[tuple[str, str, float | None]] = []
        self.lost: dict[str, str] = {}
        self.unreachable: dict[str, list[str]] = {}  # a partial session's hosts left out
        self.after_run = None
        self.on_shell = None

    # -- the session's interface -----------------------------------------------------------------
    def names(self):
        return [h for h in self.hosts if h not in self.unreachable]

    def facts(self, fact_cls):
        facts = {}
        for h in self.names():
            f = copy.deepcopy(self.facts_by_host[h])
            raw = self.lock_files.get(h)
            if raw is None:
                f.lock, f.lock_sha = None, None
            else:
                from rig.commands.lock import read_lock
                f.lock_sha = hashlib.sha256(raw).hexdigest()
                f.lock = read_lock(f.lock_sha, base64.b64encode(raw).decode())[0]
            facts[h] = f
        return facts

    def sleep(self, seconds):
        self.now += seconds

    def clock(self):
        return self.now

    def shell_all(self, commands, timeout=None, retry=False):
        return {name: self.shell(name, c, None, timeout, retry) for name, c in commands.items()}

    def shell(self, name, command, stdin=None, timeout=None, retry=False):
        command = str(command)
        self.commands.append((name, command, timeout))
        if self.on_shell:
            self.on_shell(self, name, command)
        if name in self.lost:
            return Shell(False, "", [f"{name}: lost earlier in this run ({self.lost[name]})"])
        if "flock" in command:
            return self._lock(name, command)
        if "probe $(date" in command:
            if name in self.frozen:
                self.lost[name] = f"no answer within {timeout:.0f} s"
                self.now += timeout
                return Shell(False, "", [f"no answer within {timeout:.0f} s"])
            return Shell(True, "".join(self._probe(name, s) + "\n"
                                       for s in PROBE.findall(command)), [])
        if command.startswith("{ journalctl -k "):   # commands.gpu.gate_sample_command
            return Shell(True, self.kernel_log.get(name, "-- No entries --\n")
                         + "--- rig: gpu memory\n" + self.gpu_memory.get(name, ""), [])
        if command.startswith("docker exec ") and " python -c " in command:
            return self._checks(name, shlex.split(command))
        if command == cmd.recheck_command().line:   # the read again once locked
            facts = self.facts_by_host[name]
            proxy = (["proxy answers"] + [f"{s} {slot} {PROXY_WORDS[status]} 0"
                                          for s, slots in facts.proxy.items()
                                          for slot, status in slots.items()]
                     if facts.proxy is not None else ["no proxy"])
            return Shell(True, "".join(
                ["--- containers\n"]
                + ["\t".join([c.name, c.state, c.service, c.tag, c.digest, c.profile_hash,
                              c.config_hash, c.config, c.slot]) + "\n"
                   for c in facts.containers.values()]
                + ["--- state\n", json.dumps(facts.state) + "\n", "--- proxy\n"]
                + [line + "\n" for line in proxy]), [])
        if "docker logs" in command:
            return Shell(True, "loading weights\nHF_TOKEN=hunter2-secret-value\nfatal: nope\n", [])
        return Shell(True, "", [])

    def run(self, deploy, hosts=None, **kwargs):
        name = {roll_out: "roll_out", roll_back: "roll_back", record: "record",
                control: "control", switch: "switch", settle: "settle"}[deploy]
        self.runs.append((name, list(hosts), kwargs))
        results = {}
        for host in hosts:
            if host in self.lost:
                results[host] = HostResult(host, unreachable=f"lost earlier ({self.lost[host]})")
                continue
            results[host] = getattr(self, "_" + name)(host, **kwargs)
        if self.after_run:
            self.after_run(self)
        return results

    # -- deploys ---------------------------------------------------------------------------------
    def _roll_out(self, host, releases, secrets=None, known=None):
        if host in self.pull_fails:
            mine = releases[host]       # the pull step fails (roll_out's names)
            step = "pull images" if len(mine) > 1 else f"{mine[0].service}: pull {mine[0].tag}"
            return HostResult(host, failed=[f"Roll out | {step}"], failed_steps=[step])
        if host in self.lost_in_wave:   # as Session.run says it: its swap failed, then its
            self.lost[host] = "connection lost: Socket is closed"      # liveness check
            from tasks.rollout import run_label

            step = ", ".join(map(run_label, releases[host]))
            return HostResult(host, failed=[f"Roll out | {step}"], failed_steps=[step],
                              unreachable=f"stopped answering: {self.lost[host]}")
        containers = self.facts_by_host[host].containers
        for release in releases.get(host, []):
            current = containers.pop(cmd.current(release.service), None)
            if current is not None and not current.slot:
                current = Container(current.name, current.state, *_rest(current)[:-1], "a")
            first = strategy_for(self.fleet, host, release.service).name == START_FIRST
            if current is not None:   # start_first: the old one runs (and serves) on
                containers[cmd.previous(release.service)] = Container(
                    cmd.previous(release.service), current.state if first else "exited",
                    *_rest(current))
            containers[cmd.current(release.service)] = container_of(
                release, slot=next_slot(current))
            self.started[(host, release.service)] = self.now
        return HostResult(host, changed=[r.service for r in releases.get(host, [])])

    def _switch(self, host, services, then="stop"):
        if host in self.switch_fails:
            return HostResult(host, failed=[f"Switch | {SWITCH_STEP[then]}"])
        facts = self.facts_by_host[host]
        for service in services.get(host, []):
            found = facts.containers.get(cmd.current(service))
            if found is None:
                return HostResult(host, failed=[f"Switch | {service}: no such container"])
            slot = found.slot or "a"   # the containers a test sets up carry no slot: a
            facts.proxy[service] = {slot: "live", proxy_cmd.other(slot): "maint"}
            self.switches.append((host, service, slot, found.digest))
            kept = facts.containers.get(cmd.previous(service))
            if then == "remove":
                facts.containers.pop(cmd.previous(service), None)
            elif then == "stop" and kept is not None and kept.running:
                facts.containers[kept.name] = Container(kept.name, "exited", *_rest(kept))
        return HostResult(host, changed=services.get(host, []))

    def _settle(self, host, services):
        if host in self.switch_fails:
            return HostResult(host, failed=["Settle | remove the container the proxy never sent to"])
        containers = self.facts_by_host[host].containers
        for service in services.get(host, []):
            kept = containers.pop(cmd.previous(service))
            containers[cmd.current(service)] = Container(cmd.current(service), kept.state,
                                                         *_rest(kept))
        return HostResult(host, changed=services.get(host, []))

    def _roll_back(self, host, services, restored):
        facts = self.facts_by_host[host]
        wanted = services.get(host, {})
        restored[host] = [s for s, before in wanted.items() if needs_restore(
            facts, s, before, strategy_for(self.fleet, host, s).proxied)]
        if host in self.rollback_fails:
            return HostResult(host, failed=["Roll back | restore previous"])
        for service in restored[host]:
            if back_under_own_name(facts, service, wanted[service]):
                # back under its name already: started, and its gate and switch finish it
                found = facts.containers[cmd.current(service)]
                facts.containers[found.name] = Container(found.name, "running", *_rest(found))
                continue
            warm, drain = restore_way(facts, service, strategy_for(self.fleet, host, service))
            self.restores.append((host, service, "warm" if warm else "cold"))
            if drain is not None:       # the 503 first
                facts.proxy[service] = {"a": "maint", "b": "maint"}
            new = facts.containers.pop(cmd.current(service), None)
            kept = facts.containers.pop(cmd.previous(service), None)
            if warm:    # the new one keeps serving beside, as -prev, until the switch back
                facts.containers[cmd.previous(service)] = Container(
                    cmd.previous(service), new.state, *_rest(new))
            if kept is not None:
                facts.containers[cmd.current(service)] = Container(
                    cmd.current(service), "running", *_rest(kept))
                self.started[(host, service)] = self.now
                self.failing.discard((host, service))
                self.watch_fails.discard((host, service))
        return HostResult(host, changed=restored[host])

    def _record(self, host, entries, states, finished, repair=()):
        if host in self.record_fails:
            return HostResult(host, unreachable="No route to host")
        if host in entries or host in repair:
            self.facts_by_host[host].state = copy.deepcopy(states[host])
            self.facts_by_host[host].state_rebuilt = False
        for service in finished.get(host, []):
            self.facts_by_host[host].containers.pop(cmd.previous(service), None)
        return HostResult(host)

    def _control(self, host, service, verb):
        containers = self.facts_by_host[host].containers
        found = containers.get(cmd.current(service))
        if found is None:
            return HostResult(host, failed=[f"Control a service | {service}: {verb}"])
        if verb.startswith("maintenance"):    # the proxy in front of it, the container as it is
            if host in self.switch_fails:
                return HostResult(host, failed=[f"Control a service | {service}: {verb}"])
            slot = found.slot or "a"
            self.facts_by_host[host].proxy[service] = {
                slot: "maint" if verb == "maintenance-on" else "live",
                proxy_cmd.other(slot): "maint"}
            return HostResult(host, changed=[f"{service}: {verb}"])
        facts = self.facts_by_host[host]
        if verb in ("stop", "restart") and facts.proxy is not None \
                and strategy_for(self.fleet, host, service).proxied:
            facts.proxy[service] = {"a": "maint", "b": "maint"}    # the 503 first
        state = "exited" if verb == "stop" else "running"
        containers[cmd.current(service)] = Container(found.name, state, *_rest(found))
        if verb != "stop":
            self.started[(host, service)] = self.now
        return HostResult(host, changed=[f"{service}: {verb}"])

    # -- host-side answers -----------------------------------------------------------------------
    def _probe(self, host, service):
        found = self.facts_by_host[host].containers.get(cmd.current(service))
        if found is None:
            return f"{service} probe {self.now:.3f} missing:0:0 000 "
        if not found.running:
            return f"{service} probe {self.now:.3f} exited:1:0 000 "
        up = self.now - self.started.get((host, service), self.now)
        code, body = 200, OK_BODY
        if up < self.loading.get((host, service), 0):
            code, body = 503, '{"status": "loading"}'
        elif (host, service) in self.failing or ((host, service) in self.watch_fails and up > 10):
            body = '{"status": "degraded"}'
        encoded = base64.b64encode(body.encode()).decode()
        return f"{service} probe {self.now:.3f} running:0:0 {code} {encoded}"

    def _checks(self, host, argv):
        """The checks program (commands/checks.py) run in the container: one JSON line each."""
        service = argv[2].removeprefix("rig-")
        up = self.now - self.started.get((host, service), self.now)
        ok = up >= self.checks_fail_until.get((host, service), 0)
        lines = [json.dumps({"name": c["name"], "ok": ok, "status": 200,
                             "body": '{"loaded": []}' if not ok else '{"loaded": ["m"]}',
                             "error": None if ok else "answer lacks {\"loaded\": [\"m\"]}"})
                 for c in json.loads(argv[-1])]
        return Shell(True, "\n".join(lines) + "\n", [])

    def _lock(self, host, command):
        """commands/lock.py's script, on this host's lock file."""
        args = shlex.split(command.split(" && ", 1)[1])
        verb, rest = args[args.index(LOCK_FILE) + 1], args[args.index(LOCK_FILE) + 2:]
        raw = self.lock_files.get(host)
        sha = hashlib.sha256(raw).hexdigest() if raw is not None else None

        def held(word):  # as the script prints it: the file in base64 after the first line
            body = base64.b64encode(raw).decode() if raw is not None else ""
            return Shell(True, f"{word} {sha or ''}\n{body}\n", [])
        if verb == "take":
            if raw is None or (rest[1] != "-" and rest[1] == sha):
                self.lock_files[host] = base64.b64decode(rest[0])
                return Shell(True, "TAKEN\n", [])
            return held("HELD")
        if verb == "refresh":
            if raw is not None and rest[0].encode() in raw:
                self.lock_files[host] = base64.b64decode(rest[1])
                return Shell(True, "OURS\n", [])
            return held("GONE")
        if verb == "release":
            if raw is not None and rest[0].encode() in raw:
                self.lock_files[host] = None
                return Shell(True, "RELEASED\n", [])
            return Shell(True, "FREE\n", []) if raw is None else held("GONE")
        if verb == "remove":
            if raw is None:
                return Shell(True, "FREE\n", [])
            if rest[0] == sha:
                self.lock_files[host] = None
                return Shell(True, "REMOVED\n", [])
            return held("HELD")
        raise AssertionError(verb)

    # -- what tests look at ----------------------------------------------------------------------
    @property
    def locks(self) -> set[str]:
        return {h for h, raw in self.lock_files.items() if raw is not None}

    def lock(self, host) -> dict:
        return json.loads(self.lock_files[host])

    def deploys(self):
        return [(name, hosts) for name, hosts, _ in self.runs]

    def running(self, host, service):
        return self.facts_by_host[host].running(service)


def _rest(c: Container) -> tuple:
    return (c.service, c.tag, c.digest, c.profile_hash, c.config_hash, c.config, c.slot)


class FakeJob:
    """What the ops layer needs of a Job, around a FakeSession."""

    def __init__(self, fleet, session, registry=None):
        from rig.secrets import SecretStore

        self.fleet, self._session = fleet, session
        self.secrets = SecretStore(fleet)
        self.registry = registry
        self.repo = Path("/nonexistent/rig-spec")   # tests that want hooks set a folder

    from rig.ops.job import Job as _Job
    hook = _Job.hook                                # the real hook runner

    def session(self, hosts, say=None, partial=False):
        session = self._session
        if not partial and session.unreachable:   # as runner.Session: all or nothing
            raise RigError(*(line for lines in session.unreachable.values() for line in lines))

        class Ctx:
            def __enter__(self):
                return session

            def __exit__(self, *exc):
                return False
        return Ctx()


# -- one host, for an operation's or a deploy's body (tasks/rollout.py) -------------------------
class FakeData(dict):
    __getattr__ = dict.get


class FakeHost:
    """Just enough of pyinfra's host for an operation or deploy body: the RolloutState fact,
    data, noop messages."""

    def __init__(self, facts: RolloutFacts, fleet=None, name="mainpc"):
        self.name = name
        self.data = FakeData(rig_fleet=fleet, rig_host=name)
        self.facts = facts
        self.noops: list[str] = []
        self.reads: list[str] = []       # the facts an operation read, by class name
        self.print_prefix = f"[{name}] "

    def get_fact(self, fact, **kwargs):
        self.reads.append(fact.__name__)
        assert fact is RolloutState
        return self.facts

    def noop(self, message):
        self.noops.append(message)


def run_op(op, host: FakeHost, spooled: bool = False, **kwargs) -> list:
    """What an operation yields on the fake host. spooled=True: the steps of an operation that
    changes the host, each unwrapped from its spool (tasks/rollout.py spooled), which every one
    of them must be in (a FunctionCommand, a secret's write, and a fail(), which changes
    nothing, stay as they are)."""
    from pyinfra.api import FunctionCommand
    from pyinfra.context import ctx_host

    with ctx_host.use(host):
        commands = list(op._inner(**kwargs))
    if not spooled:
        return commands
    return [c if isinstance(c, FunctionCommand) or _FAIL.fullmatch(str(c)) else unspooled(c)
            for c in commands]


_FAIL = re.compile(r"echo '?rig: [^\n]*'? >&2; exit 1")


_SPOOLED = re.compile(r"\( (?P<inner>.*) \) >/dev/null 2>(?P<f>\S+); _rig_rc=\$\?; "
                      r"\[ -s (?P=f) \] && cat (?P=f) >&2; rm -f (?P=f); \[ \$_rig_rc -eq 0 \]",
                      re.S)


def unspooled(command) -> str:
    """The step inside tasks/rollout.py's spool; AssertionError when it is not spooled."""
    from rig.commands.base import Cmd
    from rig.commands.container import SPOOL

    found = _SPOOLED.fullmatch(str(command))
    assert found is not None and found["f"] == f"{SPOOL}.$$", f"not spooled: {command!r}"
    return Cmd(found["inner"])


class StatusSession(FakeSession):
    """The fake fleet, answering status probes: one `<service> <body>` line per (host, service)
    in `bodies`; the containers read again once locked goes to FakeSession. `shell_all_calls`:
    (hosts, timeout) of each probe round."""

    def __init__(self, *args, bodies=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.bodies: dict[tuple[str, str], str] = bodies or {}
        self.shell_all_calls: list = []

    def shell_all(self, commands, timeout=None, retry=False):
        if {str(c) for c in commands.values()} == {cmd.recheck_command().line}:
            return super().shell_all(commands, timeout, retry)
        self.shell_all_calls.append((sorted(commands), timeout))
        return {h: Shell(True, "".join(f"{s} {b}\n" for (host, s), b in self.bodies.items()
                                       if host == h), []) for h in commands}


def requiring_signatures(fleet, folder: Path):
    """The fleet with one trusted public key (a fresh P-256 key's, written in `folder`): its
    rollouts, rollbacks and promotes now require signatures by it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from rig.supply.keys import public_pem

    (folder / "trusted.pub").write_bytes(
        public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    signing = fleet.build.signing.model_copy(update={"public_keys": [str(folder / "trusted.pub")]})
    return fleet.model_copy(update={"build": fleet.build.model_copy(update={"signing": signing})})
