"""The checks program, run for real with this Python against local servers: a JSON HTTP
server (GET, POST) and a one-exchange WebSocket server, each answering like the services."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rig.commands.checks import PROGRAM, check_argv, parse_results
from rig.config.checks import CheckSpec


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.answer(200, {"loaded": {}, "workers": 4} if self.path == "/models" else {"x": 1})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.answer(200, {"words": len(body["text"].split()), "valence": 0.5, "arousal": 0.1})

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def ws_port():
    """Accepts one WebSocket, reads one masked binary frame, answers its sample count as JSON."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key = [line.split(b": ")[1] for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key")][0]
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        first, second = conn.recv(2)
        size = second & 0x7F
        mask = conn.recv(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(conn.recv(size)))
        answer = json.dumps({"frame": 1, "samples": len(payload) // 2, "binary": first == 0x82}).encode()
        conn.sendall(bytes([0x81, len(answer)]) + answer)
        conn.recv(16)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def run(port, checks) -> list[dict]:
    argv = check_argv("svc", port, [CheckSpec(**c) for c in checks])
    assert argv[:6] == ["docker", "exec", "svc", "python", "-c", PROGRAM]
    result = subprocess.run([sys.executable, *argv[4:]], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return parse_results(result.stdout)


def test_get_and_post_checks_pass_and_fail_for_the_right_reason(http_port):
    results = run(http_port, [
        {"name": "models", "path": "/models", "fields": ["loaded", "workers"]},
        {"name": "score", "path": "/analyze", "method": "POST", "body": {"text": "calm and happy"},
         "expect": {"words": 3}},
        {"name": "wrong", "path": "/models", "expect": {"workers": 8}},
        {"name": "absent", "path": "/models", "fields": ["gpus"]},
        {"name": "status", "path": "/models", "status": 201},
    ])
    assert [(r["name"], r["ok"], r["error"]) for r in results] == [
        ("models", True, None), ("score", True, None),
        ("wrong", False, 'answer lacks {"workers": 8}'), ("absent", False, "no field gpus"),
        ("status", False, "status 200, expected 201")]


def test_a_websocket_exchange(ws_port):
    [result] = run(ws_port, [{"name": "frame", "path": "/stream", "method": "WS",
                              "send_hex": "0000ff7f0080", "expect": {"frame": 1, "samples": 3,
                                                                     "binary": True}}])
    assert result["ok"], result


def test_nothing_listening_is_a_failed_check_not_a_crash():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    [result] = run(port, [{"name": "down", "path": "/models"}])
    assert not result["ok"] and result["error"].startswith("ConnectionRefusedError")
