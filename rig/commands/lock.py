"""The rollout lock on a host, as shell commands (pure): /var/lib/rig/rollout.lock.

Every change to the lock file happens in one small script run under `flock` on a mutex file
beside it, so reading the lock and acting on what was read cannot be split by another rig:

    take     create it if absent; or replace it if its sha256 is still the one we were shown
             (compare-and-swap: breaking a dead holder's lock, promote/abort taking over a
             paused rollout's); prints TAKEN, or HELD <sha256> and the file
    refresh  rewrite it with a new heartbeat if it still holds our id; OURS, or GONE and the file
    release  remove it if it still holds our id; RELEASED, FREE (there is none: a release
             run again after a dropped connection), or GONE and the file
    remove   remove it if its sha256 is still the one we were shown (`rig lock release`);
             REMOVED, FREE, or HELD <sha256> and the file

The lock is put in place with `mv -T` (GNU): over a directory it fails instead of moving the
new lock into it (every --break-lock would be TAKEN); a directory is never removed either (a
lock is a file: someone made it by hand), both fail naming it.

Lock content travels base64-encoded in argv: it names who holds the lock, never a secret."""

from __future__ import annotations

import base64
import hashlib
import json

from .base import Cmd, all_of, sh

STATE_DIR = "/var/lib/rig"
LOCK_FILE = f"{STATE_DIR}/rollout.lock"
MUTEX = f"{STATE_DIR}/rollout.lock.mutex"
MUTEX_WAIT = 20   # seconds another rig's lock script may hold the mutex (it takes milliseconds)
MAX_LOCK = 65536  # bytes of a lock file rig reads: a holder is a few hundred, a paused record KiBs
NOT_A_FILE = "notfile"  # the sha256 the scripts report for a lock that is no regular file

_SCRIPT = r"""f=$0
h() { if [ -f "$f" ] && [ ! -L "$f" ]; then sha256sum "$f" | cut -c1-64; else echo notfile; fi; }
put() { printf %s "$1" | base64 -d > "$f.new" && chmod 0644 "$f.new" && mv -Tf "$f.new" "$f" \
        && return; rm -f "$f.new"; isdir; return 1; }
del() { rm -f "$f" && return; isdir; return 1; }
isdir() { if [ -d "$f" ] && [ ! -L "$f" ]; then echo "rig: $f is not a regular file, it is a" \
          "directory: remove it by hand (rm -r $f), then run rig again" >&2; fi; }
held() { echo "$1 $(h 2>/dev/null)"
         if [ -f "$f" ] && [ ! -L "$f" ]; then head -c MAX "$f" | base64 -w0; fi; echo; }
case $1 in
take) if [ ! -e "$f" ]; then put "$2" && echo TAKEN
      elif [ "$3" != - ] && [ "$(h)" = "$3" ]; then put "$2" && echo TAKEN
      else held HELD; fi ;;
refresh) if grep -qF -- "$2" "$f" 2>/dev/null; then put "$3" && echo OURS; else held GONE; fi ;;
release) if grep -qF -- "$2" "$f" 2>/dev/null; then del && echo RELEASED
         elif [ ! -e "$f" ] && [ ! -L "$f" ]; then echo FREE; else held GONE; fi ;;
remove) if [ ! -e "$f" ]; then echo FREE
        elif [ "$(h)" = "$2" ]; then del && echo REMOVED; else held HELD; fi ;;
*) echo "unknown lock verb $1" >&2; exit 2 ;;
esac""".replace("MAX", str(MAX_LOCK + 1))


def content(holder: dict) -> bytes:
    """The exact bytes a holder is written as (the sha256 compared later is of these)."""
    return json.dumps(holder, sort_keys=True).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _id_member(holder_id: str) -> str:
    """`"id": "<id>"` exactly as json.dumps writes it in content(): compared as a fixed string,
    so an operator named `Zoë` or `ops [ci]` matches exactly their own lock."""
    return json.dumps({"id": holder_id})[1:-1]


def _run(verb: str, *args: str) -> Cmd:
    return all_of(sh("install", "-d", "-m", "0755", STATE_DIR),
                  sh("flock", "-w", MUTEX_WAIT, MUTEX, "sh", "-c", _SCRIPT, LOCK_FILE, verb, *args))


def take(holder: dict, expect: str | None = None) -> Cmd:
    """Create the lock, or replace it if its sha256 is still `expect`."""
    return _run("take", base64.b64encode(content(holder)).decode(), expect or "-")


def put_back(data: bytes, expect: str) -> Cmd:
    """Write `data` back over our own lock (sha256 `expect`): a take-over that is undone."""
    return _run("take", base64.b64encode(data).decode(), expect)


def refresh(holder: dict) -> Cmd:
    return _run("refresh", _id_member(holder["id"]), base64.b64encode(content(holder)).decode())


def release(holder_id: str) -> Cmd:
    return _run("release", _id_member(holder_id))


def remove(expect: str) -> Cmd:
    return _run("remove", expect)


def parse_answer(stdout: str) -> tuple[str, str | None, dict | None, bytes]:
    """(word, sha256 or None, the lock as read_lock() reads it, its raw bytes) from a lock
    script's answer: `TAKEN`, or `HELD <sha256>` / `GONE <sha256>` and the file in base64."""
    first, _, rest = stdout.partition("\n")
    word, _, sha = first.strip().partition(" ")
    sha = sha.strip()
    if word in ("HELD", "GONE") and sha:
        lock, raw = read_lock(sha, rest)
        return word, sha, lock, raw
    if word in ("HELD", "GONE"):
        return word, None, None, b""
    return word, None, None, b""


def read_lock(sha: str, encoded: str) -> tuple[dict, bytes]:
    """The lock as a host printed it (its sha256 or NOT_A_FILE, then at most MAX_LOCK + 1
    bytes in base64) -> (parse_lock's dict, the bytes). Binary, oversized and non-regular
    lock files are malformed, with the reason."""
    if sha == NOT_A_FILE:
        return {"malformed": "not a regular file (a symlink, a device or a folder)"}, b""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return {"malformed": "unreadable"}, b""
    if len(raw) > MAX_LOCK:
        return {"malformed": f"larger than {MAX_LOCK // 1024} KiB"}, raw[:MAX_LOCK]
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return {"malformed": "not text (binary)"}, raw
    return parse_lock(text), raw


def parse_lock(text: str) -> dict:
    """A lock file's text -> the holder's dict, or {"malformed": why} for a file that is
    empty, not JSON, or not a JSON object (never "free", never a traceback)."""
    if "\0" in text:
        return {"malformed": "not text (binary)"}
    if not text.strip():
        return {"malformed": "empty"}
    try:
        value = json.loads(text)
    except ValueError:
        return {"malformed": "not JSON: " + repr(text.strip()[:60])}
    if not isinstance(value, dict):
        return {"malformed": f"a JSON {type(value).__name__}, not an object"}
    return value
