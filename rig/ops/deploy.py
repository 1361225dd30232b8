"""rig deploy: the one command a coworker runs.

    spec (loaded and validated) -> build and push what changed (refuses a dirty tree) ->
    every image checked in the registry -> canary-and-batches rollout -> services suite

Each phase is the same function its own verb calls (rig build --push, rig images verify,
rig rollout); deploy only chains them and times them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import RigError
from .images import BuildReport, build
from .job import Job, select_hosts
from .rollout import Options, RolloutReport, rollout


@dataclass
class DeployReport:
    tag: str
    build: BuildReport
    rollout: RolloutReport
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())


def deploy(job: Job, tag: str, opts: Options, say, on_build_plan=None, on_plan=None) -> DeployReport:
    """pre-deploy hook first (a failure stops it before anything is built), post-deploy with
    the result last."""
    started = time.monotonic()
    job.fleet  # noqa: B018 - validate first: a broken spec stops before anything is built
    hosts = select_hosts(job.fleet, opts.limit, opts.services)
    hook = {"tag": tag, "hosts": hosts,
            "services": opts.services or sorted({s for h in hosts for s in job.fleet.services_on(h)})}
    job.hook("pre-deploy", say, **hook)
    report = None
    try:
        report = _deploy(job, tag, opts, say, on_build_plan, on_plan, started)
    finally:
        r = report.rollout if report else None
        result = ("failed" if r is None else "paused" if r.paused else
                  "interrupted" if r.interrupted else "ok" if r.ok else "failed")
        job.hook("post-deploy", say, result=result, **hook)
    return report


def _deploy(job, tag, opts, say, on_build_plan, on_plan, started) -> DeployReport:
    phases = {"validate": time.monotonic() - started}
    mark = time.monotonic()
    built = build(job, tag, push=True, rebuild=False, allow_dirty=False, build_args=(), say=say,
                  on_plan=on_build_plan)
    phases["build and push"] = time.monotonic() - mark
    if built.missing:
        missing = [row["image"] for row in built.rows if not row["digest"]]
        raise RigError(*(f"{image}: not in the registry after the push" for image in missing),
                       "deploy stopped before the rollout: no host was changed")
    say(f"registry: all {len(built.rows)} images at {tag} present")
    mark = time.monotonic()
    rolled = rollout(job, tag, opts, say, on_plan)
    phases["rollout and verify"] = time.monotonic() - mark
    return DeployReport(tag, built, rolled, phases)
