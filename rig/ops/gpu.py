"""GPU pre-flight: what a rollout checks on a GPU host before anything is pulled anywhere.

    driver   each image a host would start declares the CUDA it needs (NVIDIA_REQUIRE_CUDA or
             CUDA_VERSION in its config, read from the registry); the host's driver (nvidia-smi)
             must meet it natively (GeForce cards have no forward compatibility)
    memory   the services a host would start declare gpu_memory; what they need must fit in the
             card's free memory plus what the containers they replace hold now

One line per problem, naming the host, the image or services and the numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Fleet
from ..config.rules import declared_gpu_memory
from ..gpu.cuda import driver_problem
from ..rollout.engine import Change

MIB = 2**20


def gpu_problems(fleet: Fleet, changes: dict[str, list[Change]], facts: dict,
                 image_env: Callable[[str, str], dict], all_start: bool = False) -> list[str]:
    """Problems of every GPU host whose changes start GPU services (image_env(repository,
    digest) reads an image's environment; each image is read once, the images side by side).
    all_start: every change starts its container (rig start/restart of what runs), not only
    those a rollout needs."""
    from ..registry import side_by_side

    starting = {host: [c for c in host_changes if (all_start or c.needed)
                       and fleet.wants_gpu(c.release.service, host)]
                for host, host_changes in changes.items()
                if fleet.gpu_present(host) and facts.get(host) is not None}
    starting = {host: cs for host, cs in starting.items() if cs}
    keys = list(dict.fromkeys((c.release.repository, c.release.digest)
                              for cs in starting.values() for c in cs))
    envs = dict(zip(keys, side_by_side(lambda key: image_env(*key), keys), strict=True))
    problems: list[str] = []
    for host, host_starting in starting.items():
        host_facts = facts[host]
        driver = host_facts.gpus[0].driver if host_facts.gpus else None
        card = card_problem(fleet, host, host_facts)
        if card:
            problems.append(card)
        for c in host_starting:
            problem = driver_problem(host, c.release.pinned,
                                     envs[(c.release.repository, c.release.digest)], driver)
            if problem:
                why = f" ({host_facts.gpu_error})" if host_facts.gpu_error and driver is None else ""
                problems.append(problem + why)
        problem = memory_problem(fleet, host, host_starting, host_facts)
        if problem:
            problems.append(problem)
    return problems


def card_problem(fleet: Fleet, host: str, host_facts) -> str | None:
    """The card nvidia-smi lists must be the profile's: images are built for the profile's
    CUDA arch, and gpu_memory is budgeted against its memory."""
    want = fleet.profile_of(host).gpu
    if want is None or not host_facts.gpus:
        return None
    found = host_facts.gpus[0]
    if (found.name, found.compute_cap) == (want.model, want.compute_cap):
        return None
    return (f"{host}: the GPU is {found.name} (compute {found.compute_cap or '?'}), but the "
            f"profile {fleet.hosts[host].profile} says {want.model} (compute "
            f"{want.compute_cap}): images are built for the profile's card; fix the profile "
            "or the host")


def memory_problem(fleet: Fleet, host: str, starting: list[Change], host_facts) -> str | None:
    """Whether the GPU services a host would start fit on its card now: what they declare
    against the free memory plus what the containers they replace hold on it now (they stop
    first; nvidia-smi's processes, matched to containers by their cgroup)."""
    if not host_facts.gpus or host_facts.gpus[0].memory_total_mib is None:
        return None
    gpu = host_facts.gpus[0]
    declared = {c.release.service: declared_gpu_memory(fleet, c.release.service, host)[0]
                for c in starting}
    need = sum(size for size in declared.values() if size) // MIB
    if not need:
        return None
    from ..rollout.strategy import START_FIRST, strategy_for

    # a start_first service's old container holds its memory until the new one is live
    replaced = {c.running.name for c in starting if c.running is not None
                and strategy_for(fleet, host, c.release.service).name != START_FIRST}
    held = sum(a.used_mib or 0 for a in host_facts.gpu_apps
               if host_facts.gpu_containers.get(a.pid) in replaced)
    used = gpu.memory_used_mib or 0
    free = gpu.memory_total_mib - used
    if need <= free + held:
        return None
    wants = " + ".join(f"{s} {size // MIB} MiB" for s, size in declared.items() if size)
    users = ", ".join(f"pid {a.pid} {a.name}"
                      + (f" ({host_facts.gpu_containers[a.pid]})"
                         if a.pid in host_facts.gpu_containers else "")
                      + f" {a.used_mib if a.used_mib is not None else '?'} MiB"
                      for a in host_facts.gpu_apps) or "no process listed by nvidia-smi"
    return (f"{host}: {wants} = {need} MiB of GPU memory needed; {gpu.name} has "
            f"{gpu.memory_total_mib} MiB, {used} MiB in use ({users}): {free} MiB free"
            + (f" + {held} MiB its replaced containers hold" if held else "")
            + "; free the card or lower gpu_memory")


def control_gpu_problems(job, service: str, facts: dict) -> list[str]:
    """rig start/restart of SERVICE's container on GPU hosts: the same driver and memory checks
    as a rollout's pre-flight, for the version each host runs (a restart after a driver
    downgrade fails at container start on a real card: "unsatisfied condition: cuda>=...")."""
    from ..commands.container import Release, current
    from ..images import image_for

    changes = {}
    for host, host_facts in facts.items():
        running = host_facts.containers.get(current(service)) if host_facts else None
        if running is None or not job.fleet.gpu_present(host) or not running.digest:
            continue
        image = image_for(job.fleet, service, host, running.tag or "unknown")
        changes[host] = [Change(host, Release(service, running.tag, image.repository,
                                              running.digest, running.profile_hash,
                                              running.config), running,
                                host_facts.state.get(service))]
    if not changes:
        return []

    def image_env(repository: str, digest: str) -> dict:
        path = repository.removeprefix(f"{job.fleet.registry.host}/")
        return job.registry.image_env(path, digest)
    return gpu_problems(job.fleet, changes, facts, image_env, all_start=True)


# -- rig gpu ---------------------------------------------------------------------------------------
@dataclass
class GpuRow:
    host: str
    card: str | None = None
    driver: str | None = None
    cuda: str | None = None            # the CUDA version the driver supports (nvidia-smi's banner)
    total_mib: int | None = None
    used_mib: int | None = None
    users: list[str] = field(default_factory=list)   # "pid 4242 python (rig-x) 7000 MiB"
    xids: list[str] = field(default_factory=list)    # fatal or not, the last day's
    error: str | None = None


def gpu_status(job, limit: list[str] | None, say, hours: float = 24) -> list[GpuRow]:
    """Per GPU host: the card, driver, CUDA it supports, memory used by each process (and its
    container), and the Xid errors of the last `hours`."""
    from ..commands.gpu import HEADER_QUERY, kernel_log_command
    from ..gpu.smi import parse_header_cuda
    from ..gpu.xid import parse_kernel_lines
    from ..gpu.xid import since as xid_since
    from ..rollout.engine import Rollout
    from .job import select_hosts

    hosts = [h for h in select_hosts(job.fleet, limit) if job.fleet.gpu_present(h)]
    if not hosts:
        return []
    with job.session(hosts) as session:
        facts = Rollout(session, job.fleet, say, "status", "").facts()
        since = {h: (facts[h].host_time or 0) - hours * 3600 for h in hosts if facts.get(h)}
        headers = session.shell_all({h: f"{HEADER_QUERY} 2>&1" for h in since}, timeout=30)
        logs = session.shell_all({h: kernel_log_command(t) for h, t in since.items()}, timeout=60)
    rows = []
    for host in hosts:
        f = facts.get(host)
        if f is None:
            rows.append(GpuRow(host, error="did not answer"))
            continue
        gpu = f.gpus[0] if f.gpus else None
        row = GpuRow(host, error=f.gpu_error)
        if gpu is not None:
            row.card, row.driver, row.total_mib, row.used_mib = (
                gpu.name, gpu.driver, gpu.memory_total_mib, gpu.memory_used_mib)
            row.cuda = parse_header_cuda(headers[host].stdout)
        row.users = [f"pid {a.pid} {a.name}"
                     + (f" ({f.gpu_containers[a.pid]})" if a.pid in f.gpu_containers else "")
                     + f" {a.used_mib if a.used_mib is not None else '?'} MiB" for a in f.gpu_apps]
        row.xids = [f"{e.time or '?'} Xid {e.xid} ({e.meaning}){' FATAL' if e.fatal else ''}"
                    for e in xid_since(parse_kernel_lines(logs[host].stdout), since[host])][-10:]
        rows.append(row)
    return rows
