"""Service containers on a host, as shell commands (pure): run, replace, restore, probe, lock.

A service runs as the container rig-<service>. While a new version is gated the previous one is
kept, stopped, as rig-<service>-prev; it goes when the rollout has finished."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass

from ..config import Fleet
from ..gpu.smi import APPS_QUERY, GPU_QUERY
from . import proxy
from .base import (
    Cmd,
    all_of,
    any_of,
    capture,
    concurrently,
    decode_to,
    no_stderr,
    ok,
    pipe,
    quiet,
    seq,
    sh,
    subshell,
    to_file,
    write_file,
)
from .host import PROFILE_ENV, PROFILE_HASH, PROFILE_JSON
from .lock import LOCK_FILE, MAX_LOCK, NOT_A_FILE

STATE_DIR = "/var/lib/rig"
LEDGER = f"{STATE_DIR}/ledger.jsonl"
STATE_FILE = f"{STATE_DIR}/state.json"
SPOOL = f"{STATE_DIR}/.stderr"        # base.spooled: a host-changing step's stderr while it runs
SECRETS_DIR = "/etc/rig/secrets"       # <service>/<name>: 0400, owned by the service's user
SERVICE_USER = "10001:10001"
CACHE_MOUNT, LOG_MOUNT = "/cache", "/logs"


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
    config: str = ""    # container_config(): everything that shapes the container, as JSON

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(self.config.encode()).hexdigest()[:16] if self.config else ""

    @property
    def secret_versions(self) -> dict[str, str]:
        """Secret name -> the version (hash) this release runs with, from its config."""
        doc = json.loads(self.config) if self.config else {}
        return {key[len("secret "):]: value for key, value in doc.items()
                if key.startswith("secret ")}


def secret_hash(service: str, name: str, value: str) -> str:
    """What a label may say about a secret: a hash that changes when the value does."""
    material = "\0".join(("rig-secret", service, name, value)).encode()
    return hashlib.sha256(material).hexdigest()[:16]


def service_env(fleet: Fleet, host: str, service: str) -> dict[str, str]:
    """The service's env plus what its runtime implies (cache and log locations)."""
    runtime, env = fleet.runtime(service, host), {}
    if runtime.cache_volume:
        env.update(HF_HOME=f"{CACHE_MOUNT}/huggingface", TORCH_HOME=f"{CACHE_MOUNT}/torch",
                   RIG_MODEL_CACHE=CACHE_MOUNT)
    if runtime.log_volume:
        env["RIG_LOG_DIR"] = LOG_MOUNT
    if fleet.gpu_enabled(host) and runtime.gpus == "none":
        env["NVIDIA_VISIBLE_DEVICES"] = "void"     # nvidia is the default runtime: hide them all
    elif fleet.gpu_enabled(host) and isinstance(runtime.gpus, list):
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(i) for i in runtime.gpus)
    env.update(fleet.services[service].env)
    return env


def container_config(fleet: Fleet, host: str, service: str, digest: str, profile_hash: str,
                     secret_hashes: dict[str, str]) -> str:
    """Everything that decides how the container runs, as canonical JSON: the image digest,
    the machine profile, resources and security, env, volumes, and a hash of each secret.
    A container whose label differs from this is replaced; `rig plan` shows the difference."""
    spec = fleet.services[service]
    settings = {"image": digest, "profile": profile_hash,
                "network": fleet.proxy.network if fleet.proxy.enabled else "host",
                **fleet.runtime(service, host).describe()}
    settings.update({f"env {k}": v for k, v in service_env(fleet, host, service).items()})
    if spec.volumes:
        settings["volumes"] = ",".join(spec.volumes)
    settings.update({f"secret {k}": v for k, v in secret_hashes.items()})
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def config_changes(old: str, new: str) -> list[str]:
    """What differs between two container_config() documents, in words: `memory 8g -> 12g`,
    `secret HF_TOKEN rotated`. A container started before rig labelled its config: `settings`."""
    try:
        before = json.loads(old) if old else None
    except ValueError:
        before = None
    after = json.loads(new)
    if not isinstance(before, dict):
        return ["settings (not labelled by this rig version)"]
    lines = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key), after.get(key)
        if was == now or key == "image":
            continue
        if key.startswith("secret "):
            lines.append(f"{key} " + ("rotated" if was and now else "added" if now else "removed"))
        elif key == "profile":
            lines.append("machine profile changed")
        else:
            lines.append(f"{key} {was if was is not None else '(unset)'} -> "
                         f"{now if now is not None else '(unset)'}")
    return lines


def secret_path(service: str, name: str, version: str | None = None) -> str:
    """Where a secret's value lives on the host. Each version has its own file, so a kept or
    restored container reads the value it was started with (a bind mount follows the path on
    every start); `secrets_gc` removes the versions no container mounts."""
    return f"{SECRETS_DIR}/{service}/{name}" + (f"@{version}" if version else "")


def _gpu_args(fleet: Fleet, host: str, gpus) -> list[str]:
    if not fleet.gpu_enabled(host) or gpus == "none":
        return []
    if gpus == "all":
        return ["--gpus", "all"]
    return ["--gpus", '"device=' + ",".join(str(i) for i in gpus) + '"']


def _runtime_args(runtime) -> list[str]:
    """Resources and security: docker run flags from a resolved Runtime."""
    argv: list[str] = ["--user", SERVICE_USER, "--stop-timeout", str(int(runtime.stop_timeout))]
    for flag, value in (("--memory", runtime.memory), ("--memory-reservation",
                        runtime.memory_reservation), ("--shm-size", runtime.shm_size),
                        ("--pids-limit", runtime.pids)):
        if value is not None:
            argv += [flag, str(value)]
    if runtime.cpus is not None:
        argv += ["--cpus", f"{runtime.cpus:g}"]
    for name, limit in sorted(runtime.ulimits.items()):
        argv += ["--ulimit", f"{name}={limit.soft}:{limit.hard}"]
    if runtime.read_only:
        argv.append("--read-only")
    for mount in runtime.tmpfs:
        argv += ["--tmpfs", mount]
    argv += [a for cap in runtime.cap_drop for a in ("--cap-drop", cap)]
    argv += [a for cap in runtime.cap_add for a in ("--cap-add", cap)]
    if runtime.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    if runtime.cache_volume:
        argv += ["-v", f"{runtime.cache_volume}:{CACHE_MOUNT}"]
    if runtime.log_volume:
        argv += ["-v", f"{runtime.log_volume}:{LOG_MOUNT}"]
    return argv


def network_args(fleet: Fleet, service: str, slot: str) -> list[str]:
    """Behind the proxy: the service's bridge network, its port published on the slot's
    loopback port only (the proxy owns the public one). Without: the host network."""
    if not fleet.proxy.enabled:
        return ["--network", "host"]
    port = fleet.services[service].port
    return ["--network", fleet.proxy.network,
            "-p", f"127.0.0.1:{fleet.proxy.slot_port(port, slot)}:{port}"]


def run_argv(fleet: Fleet, host: str, release: Release, slot: str = "a") -> list[str]:
    """docker run for a service: on the proxy's bridge network in slot `slot` (or the host
    network without the proxy), the machine profile's env file and JSON, resources and
    security from the spec, volumes, env, secrets as read-only files under /run/secrets, GPUs
    where rig manages one, labels saying what runs and how."""
    spec = fleet.services[release.service]
    runtime = fleet.runtime(release.service, host)
    argv = ["docker", "run", "-d", "--name", current(release.service),
            *network_args(fleet, release.service, slot),
            "--restart", "unless-stopped", *_runtime_args(runtime),
            "--env-file", PROFILE_ENV, "-v", f"{PROFILE_JSON}:{PROFILE_JSON}:ro"]
    for key, value in sorted(service_env(fleet, host, release.service).items()):
        argv += ["-e", f"{key}={value}"]
    for volume in spec.volumes:
        argv += ["-v", volume]
    versions = release.secret_versions
    for name in sorted(spec.secrets):
        source = secret_path(release.service, name, versions.get(name))
        argv += ["-v", f"{source}:/run/secrets/{name}:ro"]
    argv += _gpu_args(fleet, host, runtime.gpus)
    labels = [("rig.service", release.service), ("rig.tag", release.tag),
              ("rig.digest", release.digest), ("rig.profile-hash", release.profile_hash)]
    if release.config:
        labels += [("rig.config-hash", release.config_hash), ("rig.config", release.config)]
    if fleet.proxy.enabled:
        port = fleet.proxy.slot_port(fleet.services[release.service].port, slot)
        labels += [("rig.slot", slot), ("rig.port", str(port))]
    for key, value in labels:
        argv += ["--label", f"{key}={value}"]
    argv.append(release.pinned)
    return argv


def write_secret(service: str, name: str, version: str | None = None) -> Cmd:
    """The secret's value arrives on stdin as base64 (never in argv; a transport that ends stdin
    with a newline cannot change it): decoded into a temporary file in a root-only 0700 folder,
    made 0400 and owned by the service's user, then moved in place as its own version."""
    folder, path = f"{SECRETS_DIR}/{service}", secret_path(service, name, version)
    return all_of(sh("install", "-d", "-m", "0700", "-o", "root", "-g", "root",
                     SECRETS_DIR, folder),
                  subshell(seq(Cmd("umask 077"), to_file(sh("base64", "-d"), path + ".new"))),
                  sh("chown", SERVICE_USER, path + ".new"),
                  sh("chmod", "0400", path + ".new"),
                  sh("mv", "-f", path + ".new", path))


def pull_all(refs: list[str]) -> Cmd:
    """Pull several images at once, each by digest (a host's services in one wave, before any
    is swapped); fails, with each failed pull's own words on stderr, if any pull failed."""
    script = ('rc=0; pids=""; for ref in "$@"; do docker pull -q "$ref" >/dev/null & '
              'pids="$pids $!"; done; for pid in $pids; do wait "$pid" || rc=1; done; exit $rc')
    return sh("sh", "-c", script, "pull", *refs)


def swap_command(fleet: Fleet, host: str, release: Release, has_current: bool,
                 has_previous: bool, strategy: str = "direct", slot: str = "a",
                 drain: float = 0.0) -> Cmd:
    """The swap as one line, one round trip under sudo, its image on the host already (pulled
    in a step of its own, pull_all: a model image of many GiB may take most of host_timeout by
    itself): the older kept container goes, the running one is kept as -prev, the new one
    starts in `slot`; the first that fails stops the rest.

    start_first: the running one keeps running (and serving: the proxy still sends to its
    slot) while the new one starts in the other slot; the switch comes after the gate.
    stop_first: the proxy puts the service in maintenance (503) and lets open requests finish
    (up to `drain`) before the old one stops. direct: no proxy; the old one stops."""
    name, prev = current(release.service), previous(release.service)
    swap = []
    if has_previous:
        swap.append(sh("docker", "rm", "-f", prev))
    if has_current and strategy == "start_first":
        swap.append(sh("docker", "rename", name, prev))
    elif has_current:
        if strategy == "stop_first":
            swap.append(proxy.maintenance(release.service, drain))
        timeout = int(fleet.runtime(release.service, host).stop_timeout)
        swap += [sh("docker", "stop", "-t", timeout, name), sh("docker", "rename", name, prev)]
    swap.append(sh(*run_argv(fleet, host, release, slot)))
    return all_of(*swap)


def swap_unswitched(fleet: Fleet, host: str, release: Release, strategy: str = "start_first",
                    slot: str = "a", drain: float = 0.0) -> Cmd:
    """The swap when the kept container still serves (tasks/rollout.py live_previous): the
    unswitched rig-<service> beside it goes, the live rig-<service>-prev stays as the kept one
    (stop_first: behind the maintenance answer, stopped), and the new one starts in the other
    slot. A rollback then restores the live one, which never stopped serving (start_first)."""
    name, prev = current(release.service), previous(release.service)
    swap = [sh("docker", "rm", "-f", name)]
    if strategy == "stop_first":
        timeout = int(fleet.runtime(release.service, host).stop_timeout)
        swap += [proxy.maintenance(release.service, drain), sh("docker", "stop", "-t", timeout, prev)]
    swap.append(sh(*run_argv(fleet, host, release, slot)))
    return all_of(*swap)


def switch_to_current(service: str, drain: float, stop_previous: int | None,
                      remove_previous: bool = False) -> Cmd:
    """After a passed gate: the proxy sends `service` to the slot rig-<service> runs in (read
    from its label on the host), the other slot drains and goes to maintenance; then, with
    `stop_previous` (start_first: the old one served until now), the kept container stops
    (waiting that many seconds), still kept for a rollback; with `remove_previous` (a restore
    switching back: -prev is the version rolled back from) it goes once drained."""
    slot = capture(sh("docker", "inspect", "-f", '{{index .Config.Labels "rig.slot"}}',
                      current(service)))
    parts = [Cmd(f"s={slot}"),
             Cmd('case "$s" in a|b) ;; *) echo "no slot label on the container" >&2; exit 1;; esac',
                 compound=True),
             proxy.switch(service, Cmd('"$s"'), drain)]
    prev = previous(service)
    if remove_previous:
        parts.append(ok(quiet(sh("docker", "rm", "-f", prev))))
    elif stop_previous is not None:
        parts.append(any_of(quiet(no_stderr(sh("docker", "inspect", prev))),
                            Cmd("exit 0")))
        parts.append(sh("docker", "stop", "-t", int(stop_previous), prev))
    return all_of(*parts)


def switch_all(switches: list[tuple[str, float, int | None, bool]]) -> Cmd:
    """Several services' switch_to_current (service, drain, stop_previous, remove_previous)
    at once, so a host's drains and stops overlap instead of following one another; the
    proxy's state is saved once more after all of them (each saves as it goes, and two at once
    may save in either order). Fails if any of them failed, after all have ended."""
    return concurrently(*(switch_to_current(*s) for s in switches),
                        then=ok(proxy.save_state()) if len(switches) > 1 else None,
                        labels=[s[0] for s in switches])


def secrets_gc() -> Cmd:
    """Secret files no rig container mounts any more go: old versions, and the secrets of
    services the spec dropped (once their containers are gone). Nothing is removed when the
    engine cannot be asked what its containers mount; the engine is not asked at all when
    the host has no secrets (every record step runs this)."""
    script = (
        f"set -- {SECRETS_DIR}/*; [ -e \"$1\" ] || exit 0; "
        "ids=$(docker ps -aq --filter label=rig.service) || exit 0; "
        "used=$(for i in $ids; do docker inspect -f "
        "'{{range .Mounts}}{{println .Source}}{{end}}' \"$i\" || exit 1; done) || exit 0; "
        f"for f in {SECRETS_DIR}/*/*; do [ -f \"$f\" ] || continue; "
        "case $f in *.new) continue ;; esac; "
        "printf '%s\\n' \"$used\" | grep -qxF -- \"$f\" || rm -f -- \"$f\"; done; "
        f"rmdir {SECRETS_DIR}/* 2>/dev/null; true")
    return sh("sh", "-c", script)


def remove_kept(services: list[str]) -> Cmd:
    """The kept containers (rig-<service>-prev) of these services removed, those that are
    there: one `docker ps` finds them, by exact name."""
    def literal(name: str) -> str:    # docker's name filter is a regular expression
        return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", name)
    filters = [part for s in services for part in ("--filter", f"name=^/?{literal(previous(s))}$")]
    found = capture(sh("docker", "ps", "-aq", "--filter", "label=rig.service", *filters))
    return Cmd(f'ids={found} && {{ [ -z "$ids" ] || docker rm -f $ids >/dev/null; }}', compound=True)


def record_command(finished: list[str], entries: list[dict], state_doc: dict | None) -> Cmd:
    """The record step as one line, one round trip under sudo: the kept containers of
    `finished` services removed, secret versions no container mounts removed, the ledger
    lines appended and state.json written. Each part runs even when one before it failed (a
    kept container that would not go must not cost the ledger); the line fails if any did."""
    parts = [remove_kept(finished)] if finished else []
    parts.append(secrets_gc())
    state = write_file(STATE_FILE, json.dumps(state_doc, indent=2, sort_keys=True) + "\n", "0644")
    if entries:
        parts.append(all_of(append_ledger(entries), state))
    elif state_doc is not None:     # an unreadable state.json written whole again
        parts.append(state)
    return seq(Cmd("rc=0"), *(any_of(part, Cmd("rc=1")) for part in parts), Cmd("exit $rc"))


def restore_commands(service: str, has_previous: bool, warm: bool = False,
                     drain: float | None = None) -> list[Cmd]:
    """Back to the kept container: the failed one goes, the previous one starts again. With
    nothing kept (the first rollout of this service) the host goes back to running nothing.

    warm (start_first, and the proxy sends to the new one): nothing goes yet. The two swap
    names and the kept one starts beside the new one, which serves until the kept one passes
    its restore gate; the switch back then drains it and removes it (switch_to_current).
    drain (the proxy sends to the new one, and two copies do not fit): the proxy answers 503
    and open requests finish, up to `drain` seconds, before the new one goes."""
    name, prev = current(service), previous(service)
    if warm:
        aside = f"{name}-rollback"      # the name the new one holds for a moment
        return [all_of(ok(quiet(sh("docker", "rm", "-f", aside))),
                       sh("docker", "rename", name, aside), sh("docker", "rename", prev, name),
                       sh("docker", "rename", aside, prev), sh("docker", "start", name))]
    commands = [] if drain is None else [proxy.maintenance(service, drain)]
    commands.append(ok(quiet(sh("docker", "rm", "-f", name))))
    if has_previous:
        commands.append(all_of(sh("docker", "rename", prev, name), sh("docker", "start", name)))
    return commands


def settle_previous(service: str) -> Cmd:
    """The kept container that serves (live_previous) is rig-<service> again, and the one
    beside it, which the proxy never sent to, goes: it holds memory (a GPU's too) for nothing."""
    name = current(service)
    return all_of(sh("docker", "rm", "-f", name), sh("docker", "rename", previous(service), name))


def control_command(verb: str, service: str, timeout: int) -> Cmd:
    """docker stop|start|restart of rig-<service> (stop and restart wait `timeout` seconds)."""
    if verb == "start":
        return sh("docker", "start", current(service))
    if verb in ("stop", "restart"):
        return sh("docker", verb, "-t", int(timeout), current(service))
    raise ValueError(f"unknown verb {verb!r}")


def undo_swap(service: str, kept: bool, proxied: bool) -> Cmd:
    """A swap, undone (host.undone_if_late): the new container goes; with `kept` (the swap kept
    the one it replaced as -prev) that one is rig-<service> again, started, and behind the
    proxy its slot is the live one again (no drain: the new one never took a request)."""
    parts = list(restore_commands(service, kept))
    if kept and proxied:
        parts.append(switch_to_current(service, 0, None))
    return all_of(*parts)


def remove_containers(names: list[str]) -> Cmd:
    return sh("docker", "rm", "-f", *names)


FAST_POLL = 0.1    # seconds between probes until the first 2xx answer ...
FAST_PROBES = 30   # ... for at most this many probes (3 s), then the spec's interval


def probe_once(service: str, port: int, path: str, timeout: float) -> Cmd:
    """The host-side half of one health probe: the container's state and one GET of the health
    endpoint, as one line `probe <epoch> <state>:<exit code>:<restarts> <http code> <base64 body>`.
    rig runs it once per probe and judges the answers (rollout/gate.py)."""
    state = pipe(no_stderr(sh("docker", "inspect", "-f",
                              "{{.State.Status}}:{{.State.ExitCode}}:{{.RestartCount}} "
                              '{{index .Config.Labels "rig.port"}}',
                              current(service))),
                 sh("head", "-n", "1"))
    # the container's own port: the slot it is published on behind the proxy (label rig.port),
    # else the service's port on the host network
    url = Cmd(f'"http://127.0.0.1:${{p:-{int(port)}}}"' + sh(path).line)
    fetch = ok(sh("curl", "-s", "-o", Cmd('"$f"'), "-m", f"{timeout:g}", "-w", "%{http_code}", url))
    return seq(
        Cmd("s=$(" + state.line + ")"), Cmd('p=${s#* }; s=${s%% *}'),
        Cmd('case "$p" in *[!0-9]*) p= ;; esac'), Cmd('[ -n "$s" ] || s=missing:0:0'),
        Cmd("f=$(mktemp)"), Cmd("c=$(" + fetch.line + ")"),
        Cmd('echo "probe $(date +%s.%N) $s $c $(head -c 4096 "$f" | base64 -w0)"'),
        Cmd('rm -f "$f"'),
    )


def probe_services(services: list[tuple[str, int, str, float]]) -> Cmd:
    """probe_once for each (service, port, path, timeout), in one command: one line per service,
    `<service> probe <epoch> <state>:<exit>:<restarts> <http code> <base64 body>`."""
    return seq(*(seq(sh("printf", "%s ", service), probe_once(service, port, path, timeout))
                 for service, port, path, timeout in services))


def parse_probes(stdout: str) -> dict:
    """probe_services' output -> service -> Probe (lines that do not parse are left out)."""
    from ..rollout.gate import parse_probe

    probes = {}
    for line in stdout.splitlines():
        service, _, rest = line.strip().partition(" ")
        probe = parse_probe(rest, 0.0)
        if probe is not None:
            probes[service] = probe
    return probes


def logs_command(service: str, lines: int = 12) -> Cmd:
    return Cmd(f"{sh('docker', 'logs', '--tail', lines, current(service)).line} 2>&1")


def containers_command() -> Cmd:
    """One line per rig container: name, state, and the labels rig set."""
    fields = "\t".join(["{{.Names}}", "{{.State}}", '{{.Label "rig.service"}}',
                         '{{.Label "rig.tag"}}', '{{.Label "rig.digest"}}',
                         '{{.Label "rig.profile-hash"}}', '{{.Label "rig.config-hash"}}',
                         '{{.Label "rig.config"}}', '{{.Label "rig.slot"}}'])
    return sh("docker", "ps", "-a", "--filter", "label=rig.service", "--format", fields)


def gpu_query(query: str) -> Cmd:
    """An nvidia-smi query with its failure text kept (no driver), or `no nvidia-smi`."""
    return Cmd(f"if command -v nvidia-smi >/dev/null; then {query} 2>&1; "
               "else echo 'no nvidia-smi'; fi", compound=True)


def gpu_pids() -> Cmd:
    """`<pid> <container name>` for each process on the GPU that runs in a container (its
    cgroup names the container's id): what a replaced container holds on the card."""
    return Cmd(
        "command -v nvidia-smi >/dev/null && "
        f"for p in $({APPS_QUERY} 2>/dev/null | cut -d, -f2); do "
        "c=$(sed -n 's/.*docker[-/]\\([0-9a-f]\\{64\\}\\).*/\\1/p' /proc/$p/cgroup 2>/dev/null "
        "| head -n 1); [ -n \"$c\" ] && echo \"$p $(docker inspect -f '{{.Name}}' $c)\"; "
        "done", compound=True)


def _section(title: str, body: Cmd) -> Cmd:
    """One section of a host read: a `--- title` line, then what `body` prints (its errors
    and exit status dropped: tasks/rollout.py parse_rollout_facts reads what is there)."""
    return seq(sh("echo", f"--- {title}"), ok(no_stderr(body)))


def rollout_state_command() -> Cmd:
    """The RolloutState fact: the host's clock, its GPU (nvidia-smi), engine, profile hash,
    rig's containers, state.json, lock."""
    section = _section
    return seq(section("time", sh("date", "+%s")),
               section("gpu", gpu_query(GPU_QUERY)),
               section("gpu-apps", gpu_query(APPS_QUERY)),
               section("gpu-pids", gpu_pids()),
               section("docker", sh("systemctl", "is-active", "docker")),
               section("profile", sh("cat", PROFILE_HASH)),
               section("containers", containers_command()),
               section("state", seq(sh("cat", STATE_FILE), sh("echo"))),  # a last line
                                                                         # without \n too
               section("proxy", proxy.state_command()),
               section("lock", lock_read()))    # last: a lock file may end without a newline


def recheck_command() -> Cmd:
    """What a rollout reads again once it holds the lock, to see that nobody changed the host
    since pre-flight: rig's containers, state.json (an operator's maintenance) and the proxy's
    slots. The RolloutState sections of the same names, in one round trip."""
    return seq(_section("containers", containers_command()),
               _section("state", seq(sh("cat", STATE_FILE), sh("echo"))),
               _section("proxy", proxy.state_command()))


def lock_read() -> Cmd:
    """The lock file as the lock scripts print it (commands/lock.py): `@present <sha256>` and
    at most MAX_LOCK + 1 bytes in base64 for a regular file, `@present notfile` for a symlink,
    device or folder (never read: /dev/zero would never end), nothing when there is none."""
    f = shlex.quote(LOCK_FILE)
    return Cmd(f"if [ -L {f} ] || {{ [ -e {f} ] && [ ! -f {f} ]; }}; then "
               f"echo '{LOCK_PRESENT} {NOT_A_FILE}'; elif [ -f {f} ]; then "
               f'echo "{LOCK_PRESENT} $(sha256sum <{f} | cut -c1-64)"; '
               f"head -c {MAX_LOCK + 1} {f} | base64 -w0; echo; fi", compound=True)


LOCK_PRESENT = "@present"  # the lock section's first line, with the file's sha256, when it exists


def ledger_tail(lines: int, service: str | None = None) -> Cmd:
    """The last lines of the host's ledger, of one service's lines when given (filtered on the
    host, so other services' lines never crowd them out); nothing when it has none."""
    if service is None:
        return ok(no_stderr(sh("tail", "-n", int(lines), LEDGER)))
    member = json.dumps({"service": service})[1:-1]      # "service": "<name>" as written
    return ok(no_stderr(pipe(sh("grep", "-F", "--", member, LEDGER), sh("tail", "-n", int(lines)))))


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
