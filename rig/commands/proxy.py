"""The per-host proxy (HAProxy) as text and shell commands (pure).

Bootstrap writes haproxy.cfg from the spec alone: one frontend per service on its public port,
one backend with two servers, slot a and slot b (127.0.0.1:<port + proxy.slot_offsets>), both
`disabled` in the file. Which slot is live is runtime state: rollouts and `rig maintenance`
change it through the admin socket (no reload; open connections stay), and save it to the
server-state file HAProxy loads on every start and reload. A backend with no live server
answers 503 with the service's maintenance JSON, never a refused connection.

The admin socket is root's alone (mode 0600): every command here runs under sudo."""

from __future__ import annotations

import json

from ..config import Fleet
from .base import Cmd, sh

CONFIG = "/etc/haproxy/haproxy.cfg"
ERRORS_DIR = "/etc/haproxy/rig"
SOCKET = "/run/haproxy-rig-admin.sock"
STATE = "/var/lib/haproxy/rig-servers.state"
STATE_DIR, _, STATE_NAME = STATE.rpartition("/")
SLOTS = ("a", "b")
PACKAGES = ["haproxy", "socat"]


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def maintenance_body(service: str, retry_after: float) -> str:
    return json.dumps({"status": "maintenance", "service": service,
                       "retry_after": int(retry_after)}, sort_keys=True)


def errorfile(service: str, retry_after: float) -> str:
    """The whole HTTP answer HAProxy sends when the service has no live server."""
    body = maintenance_body(service, retry_after)
    return ("HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json\r\n"
            f"Retry-After: {int(retry_after)}\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Length: {len(body) + 1}\r\n"
            "Connection: close\r\n"
            "\r\n"
            f"{body}\n")


def config_text(fleet: Fleet, host: str) -> str:
    """haproxy.cfg for a host: its services, from the spec alone (idempotent: the live slot is
    not in it, so a second bootstrap writes the same bytes)."""
    lines = [
        "# Written by rig bootstrap from the fleet spec: do not edit (the next bootstrap",
        "# writes it again). Which slot is live is runtime state (rig rollout, rig",
        f"# maintenance), kept in {STATE}.",
        "global",
        "    chroot /var/lib/haproxy",
        "    user haproxy",
        "    group haproxy",
        f"    stats socket {SOCKET} mode 600 level admin",
        f"    server-state-file {STATE}",
        "",
        "defaults",
        "    mode http",
        "    load-server-state-from-file global",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 5s",
        "    timeout http-request 30s",
        "    timeout client 10m",    # a model's answer may take minutes
        "    timeout server 10m",
        "    timeout tunnel 1h",     # WebSocket streams
        "",
    ]
    for service in sorted(fleet.services_on(host)):
        port = fleet.services[service].port
        lines += [f"frontend {service}", f"    bind :{port}", f"    default_backend {service}", "",
                  f"backend {service}", f"    errorfile 503 {ERRORS_DIR}/{service}.503"]
        lines += [f"    server {slot} 127.0.0.1:{fleet.proxy.slot_port(port, slot)} disabled"
                  for slot in SLOTS]
        lines.append("")
    return "\n".join(lines)


# The host-side helpers every runtime script starts with: `hp` sends one admin command line
# (several commands joined by ';') and fails on any answer other than silence, `save` keeps
# the servers' state for the next start or reload, `scur` prints a server's open connections.
_HELPERS = (
    f'sock={SOCKET}; '
    'ask() { printf "%s\\n" "$1" | socat -t 10 stdio "UNIX-CONNECT:$sock"; }; '
    'hp() { out=$(ask "$1") || { echo "proxy: no answer on $sock" >&2; return 1; }; '
    'out=$(printf "%s" "$out" | tr -d "\\n "); '
    '[ -z "$out" ] || { echo "proxy: $1: $out" >&2; return 1; }; }; '
    # save: only an answer that is a state file (its version line, then its header) replaces
    # the one HAProxy loads at start; an empty or cut answer would bring every slot up disabled
    # (each script its own temporary file: several services' switches may save at once; one
    # left by a script that died mid-save, rig killed, goes at the next save a minute later)
    f'save() {{ t={STATE}.new.$$; find {STATE_DIR} -maxdepth 1 -name "{STATE_NAME}.new.*" '
    '-mmin +1 -delete 2>/dev/null; ask "show servers state" > "$t" '
    f'&& [ "$(head -n 1 "$t")" = 1 ] && sed -n 2p "$t" | grep -q "^# be_id " && mv -f "$t" {STATE} '
    '|| { rm -f "$t"; '
    'echo "proxy: its state could not be saved (the change holds until haproxy restarts)" >&2; '
    'return 1; }; }; '
    'scur() { ask "show stat" | awk -F, -v b="$1" -v s="$2" \'$1==b && $2==s {print $5}\'; }; '
    # is SERVICE SLOT live|maint: the stats say so after a change (`set server` answers with
    # silence, and so does a socket that accepts and closes: the stats are the proof)
    'is() { v=$(ask "show stat" | awk -F, -v b="$1" -v s="$2" \'$1==b && $2==s {print $18}\'); '
    'case "$3:$v" in "live:no check"|live:UP*|maint:MAINT*) return 0;; esac; '
    'echo "proxy: $1/$2 is not $3 after the change (its status: ${v:-no answer})" >&2; return 1; }; '
    # drain SERVICE SECONDS SLOT...: wait until the slots hold no connection, at most SECONDS
    'drain() { b=$1; end=$(( $(date +%s) + $2 )); shift 2; '
    'while :; do n=0; for s in "$@"; do c=$(scur "$b" "$s"); n=$(( n + ${c:-0} )); done; '
    '[ "$n" -eq 0 ] && return 0; '
    'if [ "$(date +%s)" -ge "$end" ]; then '
    'echo "proxy: $b: $n connection(s) still open when the drain ended" >&2; return 0; fi; '
    'sleep 0.2; done; }; ')


def _script(body: str, *args: str | int) -> Cmd:
    return sh("sh", "-c", _HELPERS + body, "rig-proxy", *args)


def switch(service: str, live: str | Cmd, drain: float) -> Cmd:
    """The proxy sends new requests of `service` to slot `live` (a or b, or a shell word that
    says which); the other slot drains (its open connections finish, up to `drain` seconds)
    and goes to maintenance. The state is saved."""
    return _script('b=$1; l=$2; case "$l" in a) o=b;; b) o=a;; *) echo "no slot $l" >&2; exit 1;; '
                   'esac; hp "set server $b/$l state ready; set server $b/$o state drain" || exit 1; '
                   'is "$b" "$l" live || exit 1; save; drain "$b" "$3" "$o"; '
                   'hp "set server $b/$o state maint" || exit 1; save || true',
                   service, live, int(drain))


def save_state() -> Cmd:
    """The servers' state saved for the next start or reload (nothing to save when rig's admin
    socket is not there yet: a fresh install runs the distribution's config)."""
    return _script('[ ! -S "$sock" ] || save')


def maintenance(service: str, drain: float) -> Cmd:
    """Both slots of `service` stop taking requests (new ones get the 503 maintenance answer);
    open connections finish, up to `drain` seconds; then both are in maintenance, saved."""
    return _script('b=$1; hp "set server $b/a state drain; set server $b/b state drain" || exit 1; '
                   'save; drain "$b" "$2" a b; '
                   'hp "set server $b/a state maint; set server $b/b state maint" || exit 1; '
                   'is "$b" a maint && is "$b" b maint || exit 1; save || true',
                   service, int(drain))


def state_command() -> Cmd:
    """Each rig backend's servers: `<service> <slot> <status> <connections>`, one per line
    (status as HAProxy's stats say: UP or `no check` for live, DRAIN, MAINT); `no proxy` when
    the admin socket does not answer (a dead HAProxy leaves its socket file behind)."""
    return Cmd(f"if s=$(printf 'show stat\\n' | socat -t 5 stdio UNIX-CONNECT:{SOCKET} "
               "2>/dev/null) && [ -n \"$s\" ]; then echo 'proxy answers'; printf '%s\\n' \"$s\" "
               "| awk -F, '($2==\"a\" || $2==\"b\") { gsub(/ /, \"_\", $18); print $1, $2, $18, $5 }'; "
               "else echo 'no proxy'; fi", compound=True)


def parse_state(lines: list[str]) -> dict[str, dict[str, str]] | None:
    """state_command's output -> service -> slot -> status (`live`, `drain`, `maint`);
    None when the host has no proxy answering (or said nothing)."""
    if not any(line.strip() == "proxy answers" for line in lines):
        return None
    found: dict[str, dict[str, str]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[1] not in SLOTS:
            continue
        status = parts[2].upper()
        word = ("maint" if status.startswith("MAINT") else "drain" if status.startswith("DRAIN")
                else "live")
        found.setdefault(parts[0], {})[parts[1]] = word
    return found


def live_slot(servers: dict[str, str] | None) -> str | None:
    """The slot the proxy sends new requests to (None: maintenance, or no such backend)."""
    live = [slot for slot, status in sorted((servers or {}).items()) if status == "live"]
    return live[0] if len(live) == 1 else None
