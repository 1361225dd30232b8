"""`rig build`: decide what to build from the registry, build it with bake on the build host,
push only when every target built, and verify every expected image in the registry.

    for each expected image (family, service, machine variant):
      tag already in the registry        -> present, nothing to do        (unless --rebuild)
      same sources pushed before (src-*) -> reuse: copy the manifest to the new tag
      otherwise                          -> build
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .commands import bake as bake_cmd
from .commands.base import Cmd
from .config import Fleet
from .errors import RigError
from .images import Image, source_tag

SECRET_PATH = ".secrets/pip_ca"


@dataclass
class BuildPlan:
    tag: str
    images: list[Image]
    hashes: dict[str, str]
    present: dict[str, str] = field(default_factory=dict)   # target -> digest at the tag
    reuse: dict[str, str] = field(default_factory=dict)     # target -> source tag to copy
    build: list[str] = field(default_factory=list)          # targets to build

    def image(self, target: str) -> Image:
        return next(i for i in self.images if i.target == target)

    def needed(self) -> list[Image]:
        """Images the bake file must define: those built, and the families they build FROM."""
        wanted = set(self.build)
        wanted.update(self.image(t).family for t in self.build if self.image(t).family)
        return [i for i in self.images if i.target in wanted]


def plan_build(images: list[Image], hashes: dict[str, str], tag: str,
               lookup: Callable[[Image, str], str | None], rebuild: bool = False) -> BuildPlan:
    """Pure decision from registry answers: lookup(image, tag) -> digest or None."""
    plan = BuildPlan(tag, images, hashes)
    for image in images:
        if rebuild:
            plan.build.append(image.target)
            continue
        digest = lookup(image, image.tag)
        if digest:
            plan.present[image.target] = digest
        elif lookup(image, source_tag(hashes[image.target])):
            plan.reuse[image.target] = source_tag(hashes[image.target])
        else:
            plan.build.append(image.target)
    return plan


def context_archive(fleet: Fleet, images: list[Image], bake: dict) -> bytes:
    """tar.gz of the contexts the bake file names, the bake file, and the CA bundle secret."""
    from .images import context_files

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for context in sorted({i.context for i in images}):
            folder = fleet.path(context)
            for path in context_files(folder):
                tar.add(path, arcname=f"{context}/{path.relative_to(folder).as_posix()}")
        _add_bytes(tar, bake_cmd.BAKE_FILE, json.dumps(bake, indent=2).encode(), 0o644)
        if fleet.build.ca_bundle:
            bundle = fleet.path(fleet.build.ca_bundle)
            if not bundle.is_file():
                raise RigError(f"build.ca_bundle: {bundle} not found")
            _add_bytes(tar, SECRET_PATH, bundle.read_bytes(), 0o600)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


_STEP = re.compile(r"^#\d+ (\[[^\]]+\] .*)$")
_NO_CACHE_YET = re.compile(r"failed to configure registry cache importer: (\S+): not found")


class BakeProgress:
    """Filters `--progress plain` down to one line per build step, and errors."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.seen, self.cached = say, set(), 0

    def __call__(self, line: str) -> None:
        match = _STEP.match(line)
        if line.startswith("== "):
            self.say(f"target {line[3:]}")
        elif match and match.group(1) not in self.seen:
            self.seen.add(match.group(1))
            if "internal]" not in match.group(1) and "[auth]" not in match.group(1):
                self.say(match.group(1)[:110])
        elif re.match(r"^#\d+ CACHED$", line):
            self.cached += 1
        elif missing := _NO_CACHE_YET.search(line):
            self.say(f"no cache yet at {missing.group(1)} (first build)")
        elif line.startswith("ERROR") or " ERROR:" in line:
            self.say(line[:200])


# -- running it ---------------------------------------------------------------------------------
@dataclass
class BuildOptions:
    push: bool
    rebuild: bool
    revision: str
    created: str


class SshExecutor:
    """Builds on an inventory host through rig's session (pyinfra, the host's sudo and
    deadlines), in a private folder made fresh for this build and removed afterwards."""

    def __init__(self, session, name: str):
        self.session, self.name = session, name

    def run(self, command) -> tuple[bool, str, list[str]]:
        result = self.session.shell(self.name, command, timeout=120)
        return result.ok, result.stdout, result.stderr

    def prepare(self, archive: bytes) -> str:
        made = self.session.shell(self.name, bake_cmd.build_dir_create(), timeout=60)
        if not made.ok or not made.stdout.strip():
            raise RigError(f"{self.name}: could not make a build folder", *made.stderr[-3:])
        workdir = made.stdout.strip().splitlines()[-1]
        data = base64.encodebytes(archive).decode()
        unpacked = self.session.shell(self.name, bake_cmd.unpack_context(workdir), stdin=data,
                                      timeout=300)
        if not unpacked.ok:
            self.cleanup(workdir)
            raise RigError(f"{self.name}: could not unpack the build context", *unpacked.stderr[-3:])
        return workdir

    def follow(self, command, workdir: str, on_line) -> tuple[int, list[str]]:
        return self.session.follow(self.name, command, workdir, on_line)

    def cleanup(self, workdir: str) -> None:
        self.session.shell(self.name, bake_cmd.build_dir_remove(workdir), timeout=120)


class LocalExecutor:
    """Builds on the control machine (build.host empty in the spec), in a private temp folder."""

    name = "this machine"

    def run(self, command) -> tuple[bool, str, list[str]]:
        result = subprocess.run(["sh", "-c", str(command)], capture_output=True, text=True)
        return result.returncode == 0, result.stdout, result.stderr.splitlines()

    def prepare(self, archive: bytes) -> str:
        workdir = tempfile.mkdtemp(prefix="rig-build-")
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(Path(workdir) / "ctx", filter="data")
        return workdir

    def follow(self, command, workdir: str, on_line) -> tuple[int, list[str]]:
        process = subprocess.Popen(["sh", "-c", str(command)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=workdir)
        last: list[str] = []
        for line in process.stdout:
            last = (last + [line.rstrip("\n")])[-40:]
            on_line(line.rstrip("\n"))
        return process.wait(), last

    def cleanup(self, workdir: str) -> None:
        shutil.rmtree(workdir, ignore_errors=True)


def run_build(fleet: Fleet, plan: BuildPlan, options: BuildOptions, executor, say) -> dict:
    """Build plan.build with the executor (build host or this machine), then push. Returns
    timings and the cache mode used. Raises RigError, with nothing pushed, when any target
    fails to build. The build folder is private and removed afterwards, whatever happened."""
    where = executor.name
    ok, driver, _ = executor.run(bake_cmd.builder_driver_command())
    driver = driver.strip()
    if not ok or not driver:
        raise RigError(f"{where}: `docker buildx inspect` found no builder: is buildx "
                       "installed? (`rig bootstrap` installs it)")
    mode, why = bake_cmd.cache_mode(fleet.build.cache, driver)
    say(f"cache: {mode} ({why})")
    started = time.monotonic()
    needed = plan.needed()
    # the secret's path is only known once the folder exists: the bake file names it relative
    bake = bake_cmd.bake_file(fleet, needed, plan.hashes, build=plan.build,
                              revision=options.revision, created=options.created,
                              cache=mode, secret_src=SECRET_PATH if fleet.build.ca_bundle else None)
    archive = context_archive(fleet, needed, bake)
    workdir = executor.prepare(archive)
    try:
        say(f"context: {len(archive) // 1024} KiB to {where}:{workdir} "
            f"in {time.monotonic() - started:.1f} s")
        return _build_and_push(fleet, plan, options, executor, workdir, bake, mode, say)
    finally:
        executor.cleanup(workdir)


def _build_and_push(fleet, plan, options, executor, workdir, bake, mode, say) -> dict:
    where, folder = executor.name, f"{workdir}/ctx"
    timings: dict = {"cache": mode}
    started = time.monotonic()
    progress = BakeProgress(lambda line: say(f"  {line}"))
    if fleet.build.network == "default":
        command = bake_cmd.bake_command(folder, plan.build)
    else:
        say(f"network {fleet.build.network}: running the bake targets as `docker buildx build "
            f"--network {fleet.build.network}` (bake files cannot set a network before buildx 0.18)")
        command = " && ".join(bake_cmd.build_commands(bake, folder, fleet.build.network))
    code, last = executor.follow(Cmd(command), workdir, progress)
    timings["build_s"] = round(time.monotonic() - started, 1)
    if code != 0:
        raise RigError(f"build failed on {where} (exit {code}); nothing was pushed",
                       *[f"  {line}" for line in last[-15:]])
    say(f"built {len(plan.build)} target(s) in {timings['build_s']} s "
        f"({progress.cached} steps cached)")
    if options.push:
        started = time.monotonic()
        refs = [ref for target in plan.build
                for ref in bake_cmd.push_refs(fleet, plan.image(target), plan.hashes[target], mode)]
        code, last = executor.follow(Cmd(bake_cmd.push_command(refs)), workdir, lambda line: None)
        if code != 0:
            raise RigError(f"push failed on {where} (exit {code})",
                           *[f"  {line}" for line in last[-8:]])
        timings["push_s"] = round(time.monotonic() - started, 1)
        say(f"pushed {len(refs)} tags in {timings['push_s']} s")
        timings["pushed"] = pushed_digests(executor, [plan.image(t) for t in plan.build])
        timings["bases"] = base_digests(executor, sorted({
            plan.image(t).args["BASE_IMAGE"] for t in plan.build
            if plan.image(t).kind == "family" and plan.image(t).args.get("BASE_IMAGE")}))
        timings["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return timings


def pushed_digests(executor, images: list[Image]) -> dict[str, set[str]]:
    """target -> the digests the build host's engine pushed that very image as, in its
    repository (what a signature may cover; machine variants share a repository, so each
    image's own list counts). A target the engine cannot say is left out (and not signed)."""
    ok, out, _ = executor.run(bake_cmd.pushed_digests_command([i.ref for i in images]))
    lines = out.splitlines() if ok else []
    found: dict[str, set[str]] = {}
    for image, line in zip(images, lines, strict=False):
        try:
            entries = json.loads(line)
        except ValueError:
            continue
        digests = {e.partition("@")[2] for e in entries or [] if isinstance(e, str)
                   and e.partition("@")[0] == image.repository and "@sha256:" in e}
        if digests:
            found[image.target] = digests
    return found


def base_digests(executor, refs: list[str]) -> dict[str, str]:
    """ref -> the digest the build host's engine pulled it at (for provenance), for the base
    images the families were built FROM; one the engine cannot say is left out."""
    if not refs:
        return {}
    ok, out, _ = executor.run(bake_cmd.pushed_digests_command(refs))
    found = {}
    for ref, line in zip(refs, out.splitlines() if ok else [], strict=False):
        name = ref.rsplit("@", 1)[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        try:
            entries = json.loads(line)
        except ValueError:
            continue
        for entry in entries or []:
            if isinstance(entry, str) and entry.partition("@")[0] == name and "@sha256:" in entry:
                found[ref] = entry.partition("@")[2]
                break
    return found


def reuse(registry, plan: BuildPlan, say) -> None:
    """Tag images whose sources did not change: a manifest copy in the registry."""
    for target, src in plan.reuse.items():
        image = plan.image(target)
        registry.copy_manifest(image.path, src, image.tag)
        say(f"tagged {image.ref} (same sources as {src})")


def verify_rows(registry, images: list[Image], known: dict[str, str] | None = None) -> list[dict]:
    """One row per expected image: its ref and digest in the registry, or None (missing).
    known: target -> digest the registry gave in this command (a build's plan) is not asked
    again."""
    known = known or {}
    return [{"image": i.ref, "kind": i.kind, "machine": i.machine,
             "digest": known.get(i.target) or registry.manifest_digest(i.path, i.tag)}
            for i in images]
