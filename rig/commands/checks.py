"""A service's `checks:` as one small program (pure): Python standard library only, run with
the service's own interpreter inside its container (`docker exec`), against the port it serves
on the host network. It sends each request (GET, POST with a JSON body, or one WebSocket
exchange) and prints one JSON line per check: {"name", "ok", "status", "body", "error"}.

Running it inside the container needs nothing on the host but Docker, and the request still
goes through the service's real listening socket."""

from __future__ import annotations

import json
import shlex

from ..config.checks import CheckSpec

PROGRAM = r'''
import base64, http.client, json, os, socket, struct, sys

def subset(expect, got):
    if isinstance(expect, dict):
        return isinstance(got, dict) and all(k in got and subset(v, got[k]) for k, v in expect.items())
    return expect == got

def http_check(port, check):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=check["timeout"])
    body = json.dumps(check["body"]) if check["body"] is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(check["method"], check["path"], body=body, headers=headers)
    answer = conn.getresponse()
    return answer.status, answer.read(65536).decode("utf-8", "replace")

def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return data

def ws(port, check):
    sock = socket.create_connection(("127.0.0.1", port), timeout=check["timeout"])
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {check['path']} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        return status, head.decode("latin-1")
    if check["send_hex"] is not None:
        opcode, payload = 0x2, bytes.fromhex(check["send_hex"])
    else:
        opcode, payload = 0x1, check["send_text"].encode()
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x80 | opcode]) + (bytes([0x80 | size]) if size < 126 else
                                       bytes([0x80 | 126]) + struct.pack("!H", size))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    first, second = read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(sock, 8))[0]
    data = read_exact(sock, length)
    sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))
    sock.close()
    return 101, data.decode("utf-8", "replace")

def run(port, check):
    result = {"name": check["name"], "ok": False, "status": None, "body": None, "error": None}
    try:
        status, text = (ws if check["method"] == "WS" else http_check)(port, check)
        result["status"], result["body"] = status, text[:2000]
        expected = 101 if check["method"] == "WS" else check["status"]
        if status != expected:
            result["error"] = f"status {status}, expected {expected}"
            return result
        if check["expect"] or check["fields"]:
            got = json.loads(text)
            missing = [f for f in check["fields"] if not isinstance(got, dict) or f not in got]
            if missing:
                result["error"] = "no field " + ", ".join(missing)
            elif not subset(check["expect"], got):
                result["error"] = "answer lacks " + json.dumps(check["expect"])
            else:
                result["ok"] = True
        else:
            result["ok"] = True
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    return result

port, checks = int(sys.argv[1]), json.loads(sys.argv[2])
for check in checks:
    print(json.dumps(run(port, check)), flush=True)
'''


def check_argv(container: str, port: int, checks: list[CheckSpec]) -> list[str]:
    """docker exec running the checks inside `container` (as its own user)."""
    documents = [c.model_dump(mode="json") for c in checks]
    return ["docker", "exec", container, "python", "-c", PROGRAM, str(port),
            json.dumps(documents, separators=(",", ":"))]


def check_command(container: str, port: int, checks: list[CheckSpec]) -> str:
    return " ".join(shlex.quote(a) for a in check_argv(container, port, checks))


def parse_results(stdout: str) -> list[dict]:
    """The program's JSON lines; anything else (a traceback) is ignored here and shown by the
    caller when a check has no result."""
    results = []
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "name" in row:
            results.append(row)
    return results
