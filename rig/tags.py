"""Image tags: `YYYYMMDD-<8-char git sha>` (UTC date), `-dirty` for a work tree with changes.

FORCE_IMAGE_TAG (as in the seeds) or --tag overrides the computed tag. Pure, except git_state()
which asks git about the work tree."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import RigError

# Docker's tag grammar; rig adds "-<machine>" for per-machine images, so leave room for it.
# \Z, not $: `$` also matches before a final newline, which let "abc\n" through.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")


@dataclass(frozen=True)
class GitState:
    sha: str  # full 40-hex revision
    dirty: bool


def computed_tag(now: datetime, git: GitState) -> str:
    """20261123-1a2b3c4d, or 20261123-1a2b3c4d-dirty."""
    date = now.astimezone(UTC).strftime("%Y%m%d")
    return f"{date}-{git.sha[:8]}" + ("-dirty" if git.dirty else "")


def check_tag(tag: str, source: str = "--tag") -> str:
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise RigError(f"{source}: {str(tag)[:120]!r} is not a valid image tag "
                       "(letters, digits, _ . -; at most 100 characters; not starting with . or -)")
    return tag


def resolve_tag(explicit: str | None, environ: dict, now: datetime, git: GitState | None) -> str:
    """--tag wins, then FORCE_IMAGE_TAG, then the computed tag (needs a git checkout)."""
    if explicit is not None:     # --tag "" is a bad tag, not "no tag given"
        return check_tag(explicit)
    if environ.get("FORCE_IMAGE_TAG"):
        return check_tag(environ["FORCE_IMAGE_TAG"], "FORCE_IMAGE_TAG")
    if git is None:
        raise RigError("not a git checkout, so there is no sha to tag with: pass --tag T "
                       "or set FORCE_IMAGE_TAG")
    return computed_tag(now, git)


def is_dirty_tag(tag: str) -> bool:
    return tag.endswith("-dirty")


def git_state(repo: Path) -> GitState | None:
    """The checkout's HEAD and whether tracked or untracked (not ignored) files differ."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)

    try:
        head = git("rev-parse", "--verify", "HEAD")
    except FileNotFoundError:
        return None
    if head.returncode != 0:
        return None
    status = git("status", "--porcelain", "--untracked-files=normal")
    return GitState(sha=head.stdout.strip(), dirty=bool(status.stdout.strip()))


def current_tag(repo: Path, explicit: str | None = None) -> str:
    """The tag for now: --tag, FORCE_IMAGE_TAG, else from the checkout at repo and today (UTC).
    git runs only in the last case."""
    environ = dict(os.environ)
    git = None if explicit is not None or environ.get("FORCE_IMAGE_TAG") else git_state(repo)
    return resolve_tag(explicit, environ, datetime.now(UTC), git)
