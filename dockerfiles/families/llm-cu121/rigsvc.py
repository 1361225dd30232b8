"""rigsvc: what every rig service shares, shipped in the family image (/opt/rig/lib).

- the machine profile the host was given (/etc/rig/machine-profile.json, mounted read-only),
  checked against the machine the image was built for (per-machine images);
- a health state that says "starting" until the service has really initialised, then "ok";
- a small JSON-over-HTTP server (stdlib) whose /health answers from that state;
- SIGTERM ends the service at once (tini forwards it), so `docker stop` takes milliseconds;
- RIG_FAULT, baked in with the build argument FAULT, makes a deliberately broken variant from
  the real image: "degraded" answers 200 {"status": "degraded"}, "crash" exits at start,
  "degrade-after=N" is healthy for N seconds and degraded from then on;
- RIG_LOAD_SECONDS (from the spec's env) is a model load: for that long /health answers
  503 {"status": "loading"} and the model endpoints refuse, as a real model server does while
  it reads its weights; then it serves.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROFILE_FILE = os.environ.get("RIG_PROFILE_FILE", "/etc/rig/machine-profile.json")


SECRETS_DIR = "/run/secrets"


def log(service: str, message: str) -> None:
    """One line on stdout (docker logs) and, with a log volume (RIG_LOG_DIR), in its file."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {service}: {message}"
    print(line, flush=True)
    folder = os.environ.get("RIG_LOG_DIR")
    if folder:
        try:
            with open(os.path.join(folder, f"{service}.log"), "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as e:  # a full or missing log volume must not stop the service
            print(f"{service}: cannot write {folder}: {e}", flush=True)


def secret(name: str) -> str | None:
    """A secret rig mounted read-only at /run/secrets/<name> (never in the environment)."""
    try:
        with open(os.path.join(SECRETS_DIR, name), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def secret_names() -> list[str]:
    """Names of the secrets this container can read (for /health: names, never values)."""
    try:
        names = sorted(os.listdir(SECRETS_DIR))
    except OSError:
        return []
    return [n for n in names if os.access(os.path.join(SECRETS_DIR, n), os.R_OK)]


class Health:
    """starting -> ok (or degraded / error). Thread-safe enough: one writer, plain assignment."""

    def __init__(self, service: str):
        self.service = service
        self.status = "starting"
        self.detail: dict = {}
        self.since = time.time()

    def set(self, status: str, **detail) -> None:
        self.status, self.detail, self.since = status, detail, time.time()
        log(self.service, f"health {status} {json.dumps(detail, sort_keys=True) if detail else ''}")

    def answer(self) -> tuple[int, dict]:
        body = {"status": self.status, "service": self.service, **self.detail}
        return (200 if self.status in ("ok", "degraded") else 503), body


def fault() -> str:
    return os.environ.get("RIG_FAULT", "").strip()


def crash_if_asked(service: str) -> None:
    if fault() == "crash":
        log(service, "RIG_FAULT=crash: exiting at start (a deliberately broken build)")
        sys.exit(3)


def load_profile() -> dict:
    """The host's machine profile. A per-machine image refuses a profile of another machine."""
    with open(PROFILE_FILE, encoding="utf-8") as f:
        profile = json.load(f)
    for key in ("name", "threads", "workers"):
        if key not in profile:
            raise ValueError(f"{PROFILE_FILE}: no {key!r}")
    built_for = os.environ.get("RIG_BUILD_MACHINE", "")
    if built_for and built_for != "any" and built_for != profile["name"]:
        raise ValueError(f"image built for machine {built_for!r}, host profile is {profile['name']!r}")
    return profile


def load_seconds() -> float:
    """RIG_LOAD_SECONDS: how long this service's model takes to load (0: at once)."""
    try:
        return max(0.0, float(os.environ.get("RIG_LOAD_SECONDS", "0") or 0))
    except ValueError:
        return 0.0


def initialise(health: Health, init) -> None:
    """Run the service's init(profile) -> detail; health becomes ok (or degraded / error).
    A model load (RIG_LOAD_SECONDS) comes first: /health says "loading" until it is done."""
    seconds = load_seconds()
    if seconds:
        health.set("loading", seconds=seconds)
        time.sleep(seconds)
    try:
        profile = load_profile()
        detail = init(profile) or {}
    except Exception as e:  # noqa: BLE001 - any init failure is reported by /health
        health.set("error", reason=str(e))
        return
    detail = {"machine": profile["name"], "secrets": secret_names(), **detail}
    health.set("degraded" if fault() == "degraded" else "ok", **detail)
    if fault().startswith("degrade-after="):  # healthy first, degraded N seconds later
        delay = float(fault().split("=", 1)[1])
        threading.Timer(delay, lambda: health.set("degraded", **detail)).start()


def stop_on_sigterm(stop) -> None:
    def handler(signum, frame):
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class JsonHandler(BaseHTTPRequestHandler):
    """Routes: {("GET", "/path"): func(handler, body) -> (code, dict)}; /health is built in."""

    routes: dict = {}
    health: Health
    protocol_version = "HTTP/1.1"

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == "/health":
            code, body = self.health.answer()
        elif (method, path) in self.routes:
            if self.health.status != "ok":
                code, body = 503, {"error": f"service is {self.health.status}"}
            else:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    request = json.loads(raw) if raw else {}
                    code, body = self.routes[(method, path)](self, request)
                except (ValueError, KeyError, TypeError) as e:
                    code, body = 400, {"error": str(e)}
        else:
            code, body = 404, {"error": f"no route {method} {path}"}
        self.send_json(code, body)

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format, *args):  # quiet: health probes every 500 ms
        pass


def serve_http(service: str, port: int, init, routes: dict) -> None:
    """Open the port first (so /health can say "starting"), initialise, serve until SIGTERM."""
    crash_if_asked(service)
    health = Health(service)
    handler = type("Handler", (JsonHandler,), {"routes": routes, "health": health})
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    stop_on_sigterm(server.shutdown)
    log(service, f"listening on :{port}")
    threading.Thread(target=initialise, args=(health, init), daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    log(service, "stopped")
