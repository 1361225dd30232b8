"""`rig`: the command line. Parses, loads the spec, calls one layer below, prints.

User mistakes and unreachable parts are RigError: printed as plain lines, exit 1, no traceback."""

from __future__ import annotations

# pyinfra runs hosts in gevent greenlets and its CLI module patches the standard library on
# import; doing it first, before ssl is imported by requests, is what pyinfra's own CLI does.
from gevent import monkey

monkey.patch_all()

import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from .errors import RigError  # noqa: E402

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def say(part: str, message: str) -> None:
    click.echo(f"  {part:<14} {message}")


def friendly(func):
    """Turn RigError into `rig: ...` lines on stderr and exit 1; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RigError as e:
            for i, line in enumerate(e.lines or [str(e)]):
                click.echo(("rig: " if i == 0 else "     ") + line, err=True)
            sys.exit(1)
        except Exception as e:  # the docker SDK's errors, without importing it (0.3 s) up front
            if not type(e).__module__.startswith("docker."):
                raise
            click.echo(f"rig: docker: {str(e).splitlines()[0]}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("rig: interrupted", err=True)
            sys.exit(130)

    return wrapper


class Context:
    def __init__(self, config: str):
        self.config = Path(config)

    @property
    def repo(self) -> Path:
        return self.config.resolve().parent

    def importable(self) -> Path:
        """tasks/ lives beside fleet.yml (the repo checkout), not in the installed package."""
        if not (self.repo / "tasks").is_dir():
            raise RigError(f"{self.repo}: no tasks/ folder beside {self.config.name}; "
                           "run rig from the repository (or pass -c path/to/fleet.yml)")
        if str(self.repo) not in sys.path:
            sys.path.insert(0, str(self.repo))
        return self.repo


@click.group(context_settings=CONTEXT)
@click.option("-c", "--config", default="fleet.yml", show_default=True, metavar="FILE",
              help="The fleet spec; its folder holds profiles/, inventory/ and the lab state.")
@click.version_option(package_name="rig")
@click.pass_context
def main(ctx: click.Context, config: str) -> None:
    """rig: provision and roll out a containerised GPU fleet, declaratively.

    \b
    Typical flow:
      rig validate                     check fleet.yml and profiles/
      rig lab up                       start the local lab (engine, registry, hosts)
      rig bootstrap -i inventory/lab.py  install Docker, buildx, daemon.json, profiles
      rig build --push                 build family and service images, push them
      rig images verify                every expected image is in the registry
      rig plan                         what a rollout would change, wave by wave
      rig rollout                      canary first, health gate, then batches
      rig status                       what runs where, healthy or not
    The tag defaults to YYYYMMDD-<git sha> (`rig tag`); --tag or FORCE_IMAGE_TAG override it.
    """
    ctx.obj = Context(config)


@main.command()
@click.option("--overlay", metavar="FILE", help="Also merge an overlay such as lab.yml.")
@click.pass_obj
@friendly
def validate(obj: Context, overlay: str | None) -> None:
    """Check the spec. Exit 0 when valid; else each problem as FILE:LINE: FIELD: MESSAGE, exit 1."""
    from .config import load_fleet

    fleet = load_fleet(obj.config, overlay)
    hosts = ", ".join(f"{h} ({s.profile})" for h, s in fleet.hosts.items())
    click.echo(f"{obj.config}: valid")
    click.echo(f"  hosts     {hosts}")
    click.echo(f"  families  {', '.join(fleet.families)}")
    click.echo(f"  services  {', '.join(f'{n}:{s.port}' for n, s in fleet.services.items())}")
    click.echo(f"  registry  {fleet.registry.host}/{fleet.registry.namespace}")
    click.echo(f"  rollout   canary {', '.join(fleet.rollout.canary)}, batch {fleet.rollout.batch}")


# -- lab --------------------------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def lab() -> None:
    """The local lab: a Docker engine, a TLS registry with auth, and SSH hosts (mainpc, pc2).

    Everything the lab makes lives in .lab/ (git-ignored) and on the 10.77.0.0/24 network;
    `rig lab down` removes all of it."""


@lab.command("up")
@click.option("--hosts", "count", default=2, show_default=True, type=click.IntRange(1, 20),
              help="Number of hosts: mainpc, pc2, then node3, node4, ...")
@click.pass_obj
@friendly
def lab_up(obj: Context, count: int) -> None:
    """Start (or complete) the lab. Idempotent: a second run creates nothing and says so."""
    from .lab import Lab

    started = time.monotonic()
    click.echo(f"lab up ({count} host{'s' if count > 1 else ''}):")
    state = Lab.for_repo(obj.repo).up(count, say)
    click.echo(f"lab ready in {time.monotonic() - started:.1f} s: "
               f"{len(state.hosts)} hosts; inventory/lab.py reaches them over SSH")


@lab.command("down")
@click.pass_obj
@friendly
def lab_down(obj: Context) -> None:
    """Remove every container, network, volume, process and file the lab created."""
    from .lab import Lab

    click.echo("lab down:")
    Lab.for_repo(obj.repo).down(say)
    click.echo("lab removed")


@lab.command("status")
@click.pass_obj
@friendly
def lab_status(obj: Context) -> None:
    """Show each part of the lab and whether it answers. Exit 1 if any part does not."""
    from .lab import Lab

    rows = Lab.for_repo(obj.repo).status()
    for part, ok, detail in rows:
        click.echo(f"  {part:<14} {'ok  ' if ok else 'DOWN'} {detail}")
    if not all(ok for _, ok, _ in rows):
        sys.exit(1)


# -- hosts ------------------------------------------------------------------------------------
def inventory_option(func):
    return click.option(
        "-i", "--inventory", default="inventory/lab.py", show_default=True, metavar="FILE",
        help="pyinfra inventory: inventory/lab.py (the local lab) or inventory/production.py.",
    )(func)


def limit_option(func):
    return click.option("--limit", metavar="HOSTS", default=None,
                        help="Comma-separated hosts or groups to act on (default: all).")(func)


def host_say(host: str, message: str) -> None:
    click.echo(f"  {host:<10} {message}")


@main.command()
@inventory_option
@limit_option
@click.pass_obj
@friendly
def bootstrap(obj: Context, inventory: str, limit: str | None) -> None:
    """Bring hosts to ready: Docker engine, buildx, daemon.json, registry CA and login, docker
    group, NVIDIA toolkit on GPU hosts, machine profile. Idempotent: a second run changes nothing.

    Pre-flight (nothing changes if any fails): the registry token is set, every host answers
    over SSH and runs a supported Debian or Ubuntu."""
    obj.importable()
    from tasks.bootstrap import bootstrap as bootstrap_deploy
    from tasks.docker import state_of

    from .hosts import check_releases, gather
    from .runner import Session
    from .secrets import registry_token

    started = time.monotonic()
    hosts = limit.split(",") if limit else None
    with Session(obj.repo, inventory, limit=hosts, say=host_say) as session:
        fleet = session.hosts[0].data.rig_fleet
        token = registry_token(fleet)
        check_releases(gather(session, lambda host: state_of(fleet)))
        click.echo(f"bootstrap {', '.join(h.name for h in session.hosts)}:")
        results = session.run(bootstrap_deploy, token=token)
    report(results, started)


@main.command()
@inventory_option
@click.option("--suite", type=click.Choice(["all", "bootstrap", "services"]), default="all",
              show_default=True, help="bootstrap: hosts only; services: what rollouts started.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@friendly
def verify(obj: Context, inventory: str, suite: str, pytest_args: tuple[str, ...]) -> None:
    """Run the testinfra suite (tests/verify) against the inventory's hosts.

    \b
    bootstrap: engine running, buildx, daemon.json, machine profile, registry login and pull,
               docker group
    services:  every service on every host runs the digest rig recorded, as 10001:10001,
               with tini as PID 1, and answers its health check with the expected body

    Extra arguments go to pytest, e.g. `rig verify -- -k profile`."""
    sys.exit(run_verify(obj, inventory, suite, pytest_args))


def run_verify(obj: Context, inventory: str, suite: str, pytest_args=()) -> int:
    import subprocess

    repo = obj.importable()
    env = {**os.environ, "RIG_INVENTORY": inventory}
    folder = repo / "tests" / "verify"
    paths = [str(folder)] if suite == "all" else [str(folder / f"test_{suite}.py")]
    argv = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
            "--rootdir", str(repo), *pytest_args]
    return subprocess.run(argv, env=env, cwd=repo).returncode


# -- images -----------------------------------------------------------------------------------
def tag_option(func):
    return click.option("--tag", metavar="T", default=None,
                        help="Image tag. Default: FORCE_IMAGE_TAG, else YYYYMMDD-<git sha> "
                             "(UTC; -dirty when the work tree has changes).")(func)


def parse_build_args(values: tuple[str, ...], fleet) -> dict[str, dict[str, str]]:
    """('model_ops_coordinator:FAULT=degraded',) -> {service: {KEY: value}}."""
    result: dict[str, dict[str, str]] = {}
    for value in values:
        service, _, assignment = value.partition(":")
        key, eq, arg = assignment.partition("=")
        if not eq or not key or service not in fleet.services:
            raise RigError(f"--build-arg {value!r}: expected SERVICE:KEY=VALUE with a service "
                           f"of the spec ({', '.join(fleet.services)})")
        result.setdefault(service, {})[key] = arg
    return result


def resolve_images(obj: Context, inventory: str, tag: str | None, build_args=()):
    from .images import expected_images
    from .inventory import fleet_for
    from .tags import current_tag, git_state

    fleet = fleet_for(obj.repo, inventory)
    git = git_state(obj.repo)
    tag = current_tag(obj.repo, tag)
    images = expected_images(fleet, tag, parse_build_args(build_args, fleet))
    return fleet, git, tag, images


@main.command()
@inventory_option
@tag_option
@click.option("--push", is_flag=True, help="Push to the registry once every target has built.")
@click.option("--rebuild", is_flag=True,
              help="Build every image, even those whose tag or sources are already pushed.")
@click.option("--allow-dirty", is_flag=True,
              help="Push although the work tree has uncommitted changes.")
@click.option("--print", "print_only", is_flag=True,
              help="Print the generated bake file (JSON) and exit; touches nothing.")
@click.option("--build-arg", "build_args", multiple=True, metavar="SERVICE:KEY=VALUE",
              help="Extra build argument for one service, e.g. model_ops_coordinator:FAULT=degraded "
                   "(the deliberately broken variant rollout tests use). Repeatable.")
@click.pass_obj
@friendly
def build(obj: Context, inventory: str, tag: str | None, push: bool, rebuild: bool,
          allow_dirty: bool, print_only: bool, build_args: tuple[str, ...]) -> None:
    """Build the family images, then the service images on them (one per machine for
    per-machine services), with docker buildx bake on the spec's build host.

    \b
    For each image the registry decides:
      tag already there           nothing to do (unless --rebuild)
      same sources pushed before  the manifest gets the new tag in the registry, no build
      otherwise                   built; pushed with --push only after every target built
    Then every expected image is checked in the registry (as `rig images verify` does)."""
    import json
    from datetime import datetime

    from .build import BuildOptions, LocalExecutor, SshExecutor, plan_build, reuse, run_build
    from .commands.bake import bake_file
    from .images import source_hashes
    from .registry import client_for

    started = time.monotonic()
    repo = obj.importable()
    fleet, git, tag, images = resolve_images(obj, inventory, tag, build_args)
    hashes = source_hashes(fleet, images)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    options = BuildOptions(push=push, rebuild=rebuild, revision=git.sha if git else "unknown",
                           created=created)
    if print_only:
        cache = "registry" if fleet.build.cache == "registry" else "inline"
        bake = bake_file(fleet, images, hashes, build=[i.target for i in images],
                         revision=options.revision, created=created, cache=cache,
                         secret_src=fleet.build.ca_bundle)
        click.echo(json.dumps(bake, indent=2))
        return
    if push and git and git.dirty and not allow_dirty:
        raise RigError(f"the work tree has uncommitted changes (tag {tag}): commit them, "
                       "or pass --allow-dirty to push anyway")
    registry = client_for(fleet)
    registry.ping()
    plan = plan_build(images, hashes, tag, lambda image, t: registry.manifest_digest(image.path, t),
                      rebuild)
    click.echo(f"build {tag} ({len(images)} images, registry {fleet.registry.host}):")
    for image in images:
        if image.target in plan.present:
            state = "present"
        elif image.target in plan.reuse:
            state = f"reuse    {plan.reuse[image.target]}"
        else:
            state = "build"
        click.echo(f"  {image.target:<40} {state}")
    if plan.build:
        where = fleet.build.host
        if where:
            from .runner import Session

            with Session(repo, inventory, limit=[where]) as session:
                run_build(fleet, plan, options, SshExecutor(session.hosts[0]), say_line)
        else:
            run_build(fleet, plan, options, LocalExecutor(), say_line)
    if not push:
        click.echo(f"not pushed (no --push): {len(plan.build)} built image(s) stay on "
                   f"{fleet.build.host or 'this machine'}; {len(plan.reuse)} not tagged")
        click.echo(f"done in {time.monotonic() - started:.1f} s")
        return
    reuse(registry, plan, say_line)
    missing = show_images(registry, images)
    click.echo(f"built {len(plan.build)}, tagged {len(plan.reuse)}, present {len(plan.present)}; "
               f"done in {time.monotonic() - started:.1f} s")
    if missing:
        raise RigError(f"{missing} image(s) missing from the registry after the build")


def say_line(message: str) -> None:
    click.echo(f"  {message}")


def show_images(registry, images) -> int:
    from .build import verify_rows

    return print_image_rows(verify_rows(registry, images))


def print_image_rows(rows: list[dict]) -> int:
    """One line per expected image: its digest or MISSING. Returns how many are missing."""
    for row in rows:
        click.echo(f"  {row['image']:<72} {row['digest'] or 'MISSING'}")
    return sum(1 for row in rows if not row["digest"])


@main.command("tag")
@click.pass_obj
@friendly
def tag_command(obj: Context) -> None:
    """Print the tag a build or rollout would use now: FORCE_IMAGE_TAG, else
    YYYYMMDD-<8-char git sha> (UTC), with -dirty for a work tree with changes."""
    from .tags import current_tag

    click.echo(current_tag(obj.repo))


@main.group(context_settings=CONTEXT)
def images() -> None:
    """Images in the registry."""


@images.command("verify")
@inventory_option
@tag_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@friendly
def images_verify(obj: Context, inventory: str, tag: str | None, as_json: bool) -> None:
    """List every image the spec expects at TAG (families, services, machine variants) with its
    digest in the registry, or MISSING. Exit 1 when any is missing."""
    import json

    from .build import verify_rows
    from .registry import client_for

    fleet, _, tag, expected = resolve_images(obj, inventory, tag)
    rows = verify_rows(client_for(fleet), expected)
    missing = [row for row in rows if not row["digest"]]
    if as_json:
        click.echo(json.dumps({"tag": tag, "registry": fleet.registry.host, "images": rows,
                               "missing": len(missing)}, indent=2))
    else:
        click.echo(f"images at {tag} in {fleet.registry.host}:")
        print_image_rows(rows)
        click.echo(f"{len(rows) - len(missing)} of {len(rows)} present")
    if missing:
        sys.exit(1)


# -- rollout ----------------------------------------------------------------------------------
def services_option(func):
    return click.option("--services", metavar="S,...", default=None,
                        help="Only these services (default: every service).")(func)


def rollout_options(func):
    func = limit_option(func)
    func = click.option("--canary", metavar="HOST,...", default=None,
                        help="Canary hosts for wave 1 (default: the spec's rollout.canary).")(func)
    func = click.option("--batch", metavar="N|P%", default=None,
                        help="Hosts per later wave: a count or a share (default: the spec's).")(func)
    return func


def split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


class RolloutJob:
    """What rollout, rollback and plan share: spec, tag, targets, session, pre-flight."""

    def __init__(self, obj: Context, inventory: str, services: str | None,
                 limit: str | None = None):
        from .inventory import fleet_for

        self.repo = obj.importable()
        self.inventory = inventory
        self.fleet = fleet_for(self.repo, inventory)
        self.services = split(services)
        unknown = [s for s in self.services or [] if s not in self.fleet.services]
        if unknown:
            raise RigError(f"--services: unknown service {', '.join(unknown)} "
                           f"(services: {', '.join(self.fleet.services)})")
        self.hosts = [h for h in self.fleet.hosts
                      if any(not self.services or s in self.services for s in self.fleet.services_on(h))]
        if limit:
            wanted = split(limit)
            known = set(self.fleet.hosts) | set(self.fleet.groups())
            unknown = [h for h in wanted if h not in known]
            if unknown:
                raise RigError(f"--limit: unknown host or group {', '.join(unknown)} "
                               f"(hosts: {', '.join(self.fleet.hosts)})")
            chosen = set(self.fleet.resolve_hosts(wanted))
            self.hosts = [h for h in self.hosts if h in chosen]
        if not self.hosts:
            raise RigError("no host runs the chosen services (check --services and --limit)")

    def tag(self, explicit: str | None) -> str:
        from .tags import current_tag

        return current_tag(self.repo, explicit)

    def session(self):
        from .runner import Session

        return Session(self.repo, self.inventory, limit=self.hosts, say=host_say)


def print_plan(waves, changes) -> None:
    for number, wave in enumerate(waves, start=1):
        click.echo(f"wave {number} ({'canary' if number == 1 else 'batch'}): {', '.join(wave)}")
        for host in wave:
            for change in changes.get(host, []):
                r, running = change.release, change.running
                now = f"{running.tag} {running.digest[7:19]}" if running else "(not running)"
                mark = "change" if change.needed else "same  "
                click.echo(f"  {host:<10} {r.service:<30} {mark} {now} -> {r.tag} {r.digest[7:19]}")


def prepare(job: RolloutJob, session, engine, releases, problems, break_lock: bool, canary, batch):
    """Pre-flight on connected hosts; returns (waves, changes). Raises with every problem."""
    from .plan import parse_batch, waves
    from .rollout.engine import Change, host_problems

    facts = engine.facts()
    problems = problems + host_problems(job.fleet, facts, break_lock, time.time())
    plan_waves = waves(job.fleet, job.hosts, split(canary), parse_batch(batch))
    changes = {h: [Change(h, r, facts[h].running(r.service)) for r in releases.get(h, [])]
               for h in job.hosts}
    if problems:
        raise RigError(*problems, "pre-flight failed: no host was changed")
    return plan_waves, changes


def execute(job: RolloutJob, action: str, tag: str, releases, problems, break_lock, canary,
            batch, no_verify: bool, obj: Context) -> None:
    from .rollout.engine import Rollout

    started = time.monotonic()
    with job.session() as session:
        engine = Rollout(session, job.fleet, say_line, action, tag)
        plan_waves, changes = prepare(job, session, engine, releases, problems, break_lock,
                                      canary, batch)
        print_plan(plan_waves, changes)
        checked = time.monotonic()
        lock_problems = engine.take_locks(break_lock)
        if lock_problems:
            raise RigError(*lock_problems, "pre-flight failed: no host was changed")
        locked = time.monotonic()
        try:
            outcome = engine.run(plan_waves, changes, engine.last_facts)
        finally:
            ran = time.monotonic()
            engine.release_locks()
    elapsed = time.monotonic() - started
    phases = (f"connect and pre-flight {checked - started:.2f} s, locks "
              f"{locked - checked + time.monotonic() - ran:.2f} s, waves {ran - locked:.2f} s "
              f"with {outcome.gate_seconds:.2f} s in health gates")
    for line in outcome.lines:
        click.echo(line, err=not outcome.ok)
    if outcome.interrupted:
        click.echo(f"rig: {action} interrupted after {elapsed:.1f} s", err=True)
        sys.exit(130)
    if not outcome.ok:
        raise RigError(f"{action} {tag} failed after {elapsed:.1f} s")
    click.echo(f"{action} {tag} done in {elapsed:.1f} s ({phases})")
    if not no_verify and any(c.needed for cs in changes.values() for c in cs):
        click.echo("verify (testinfra, services):")
        if run_verify(obj, job.inventory, "services", ("--no-header",)) != 0:
            raise RigError("the rollout finished but `rig verify --suite services` failed")


@main.command()
@inventory_option
@tag_option
@services_option
@rollout_options
@click.option("--break-lock", is_flag=True, help="Remove a rollout lock left by a dead rollout.")
@click.option("--no-verify", is_flag=True, help="Skip the testinfra check after a rollout.")
@click.pass_obj
@friendly
def rollout(obj: Context, inventory: str, tag: str | None, services: str | None, canary, batch,
            break_lock: bool, no_verify: bool, limit: str | None) -> None:
    """Roll out TAG: canary hosts first, a health gate per service, then batches.

    \b
    Pre-flight (all or nothing): every image at TAG exists in the registry (deployed by
    digest), every host answers, is bootstrapped and has its profile, and a lock is taken on
    every host. On a failed gate the wave's hosts go back to their previous containers and
    later waves are not touched. Ctrl-C stops after the current wave. Each host keeps
    /var/lib/rig/ledger.jsonl and state.json. A re-run of a finished rollout changes nothing."""
    from .registry import client_for
    from .rollout.engine import resolve_releases

    job = RolloutJob(obj, inventory, services, limit)
    tag = job.tag(tag)
    releases, problems = resolve_releases(job.fleet, job.hosts, job.services, tag,
                                          client_for(job.fleet))
    click.echo(f"rollout {tag} to {', '.join(job.hosts)}:")
    execute(job, "rollout", tag, releases, problems, break_lock, canary, batch, no_verify, obj)


@main.command()
@inventory_option
@services_option
@click.option("--to", "to_tag", metavar="TAG", default=None,
              help="Go to this tag (default: each service's previous version on each host).")
@rollout_options
@click.option("--break-lock", is_flag=True, help="Remove a rollout lock left by a dead rollout.")
@click.option("--no-verify", is_flag=True, help="Skip the testinfra check afterwards.")
@click.pass_obj
@friendly
def rollback(obj: Context, inventory: str, services: str | None, to_tag: str | None, canary,
             batch, break_lock: bool, no_verify: bool, limit: str | None) -> None:
    """Go back to the previous known-good version (from each host's state.json), or to
    --to TAG, through the same waves and health gates as a rollout."""
    from .commands.container import Release
    from .images import image_for
    from .registry import client_for
    from .rollout.engine import Rollout, resolve_releases

    job = RolloutJob(obj, inventory, services, limit)
    if to_tag:
        from .tags import check_tag
        releases, problems = resolve_releases(job.fleet, job.hosts, job.services,
                                              check_tag(to_tag), client_for(job.fleet))
        label = to_tag
    else:
        releases, problems = {}, []
        with job.session() as session:
            facts = Rollout(session, job.fleet, say_line, "rollback", "").facts()
        for host in job.hosts:
            profile_hash = job.fleet.profile_of(host).content_hash()
            for service in job.fleet.services_on(host):
                if job.services and service not in job.services:
                    continue
                previous = (facts[host].state.get(service) or {}).get("previous")
                if not previous or not previous.get("digest"):
                    click.echo(f"  {host} {service}: no previous version recorded; left as is")
                    continue
                image = image_for(job.fleet, service, host, previous["tag"])
                releases.setdefault(host, []).append(Release(
                    service, previous["tag"], image.repository, previous["digest"], profile_hash))
        label = "previous"
        if not releases:
            raise RigError("nothing to roll back: no service has a previous version recorded "
                           "(use --to TAG)")
    click.echo(f"rollback to {label} on {', '.join(job.hosts)}:")
    execute(job, "rollback", label, releases, problems, break_lock, canary, batch, no_verify, obj)


@main.command()
@inventory_option
@tag_option
@services_option
@rollout_options
@click.pass_obj
@friendly
def plan(obj: Context, inventory: str, tag: str | None, services: str | None, canary, batch,
         limit: str | None) -> None:
    """What `rig rollout` would do, without doing it: the waves, per host and service the
    current and target tag and digest, what would change, and any pre-flight problem."""
    from .registry import client_for
    from .rollout.engine import Rollout, resolve_releases

    job = RolloutJob(obj, inventory, services, limit)
    tag = job.tag(tag)
    releases, problems = resolve_releases(job.fleet, job.hosts, job.services, tag,
                                          client_for(job.fleet))
    click.echo(f"plan {tag} for {', '.join(job.hosts)}:")
    with job.session() as session:
        engine = Rollout(session, job.fleet, say_line, "plan", tag)
        try:
            plan_waves, changes = prepare(job, session, engine, releases, problems, False,
                                          canary, batch)
        except RigError as e:
            raise RigError(*(e.lines or [str(e)])[:-1], "pre-flight would fail") from None
    print_plan(plan_waves, changes)
    count = sum(c.needed for cs in changes.values() for c in cs)
    click.echo(f"{count} change(s); pre-flight passes")


@main.command()
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.pass_obj
@friendly
def status(obj: Context, inventory: str, as_json: bool) -> None:
    """What runs where: host x service with tag, digest, health now, and since when."""
    import json

    from tasks.util import run_on

    from .commands.container import status_probe
    from .rollout.engine import Rollout
    from .rollout.gate import body_matches

    job = RolloutJob(obj, inventory, None)
    rows = []
    with job.session() as session:
        engine = Rollout(session, job.fleet, say_line, "status", "")
        facts = engine.facts()
        for host in session.hosts:
            services = job.fleet.services_on(host.name)
            _, out, _ = run_on(host, status_probe(job.fleet, services))
            answers = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            for service in services:
                running = facts[host.name].running(service)
                recorded = facts[host.name].state.get(service) or {}
                body = answers.get(service, "")
                spec = job.fleet.services[service]
                health = "ok" if body_matches(body, spec.health.expect) else (
                    "down" if not body.strip() else "BAD " + body.strip()[:40])
                rows.append({"host": host.name, "service": service,
                             "tag": running.tag if running else None,
                             "digest": running.digest if running else None,
                             "health": health if running else "not running",
                             "since": recorded.get("since")})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'HOST':<10} {'SERVICE':<30} {'TAG':<28} {'DIGEST':<14} {'HEALTH':<12} SINCE")
    for r in rows:
        click.echo(f"{r['host']:<10} {r['service']:<30} {r['tag'] or '-':<28} "
                   f"{(r['digest'] or '-')[7:19] or '-':<14} {r['health']:<12} {r['since'] or '-'}")


def report(results, started: float) -> None:
    failed = [r for r in results.values() if not r.ok]
    for r in results.values():
        state = "FAILED" if r.failed else ("changed" if r.changed else "ok")
        detail = f"{len(r.changed)} changed, {r.unchanged} unchanged"
        if r.failed:
            detail += f", failed: {', '.join(r.failed)}"
        if r.not_run:
            detail += f", {r.not_run} not run"
        click.echo(f"  {r.name:<10} {state:<8} {detail}")
    total = sum(len(r.changed) for r in results.values())
    click.echo(f"{total} change{'s' if total != 1 else ''} on {len(results)} host"
               f"{'s' if len(results) != 1 else ''} in {time.monotonic() - started:.1f} s")
    if failed:
        raise RigError(f"failed on {', '.join(r.name for r in failed)}")


if __name__ == "__main__":
    main()
