"""Cross-field rules: references between sections that one model alone cannot check.

Each rule yields (path, message) so the loader can point at the YAML line of the offending
field rather than at the top of the file."""

from __future__ import annotations

from collections.abc import Iterator

from .fleet import Fleet, is_inside

Problem = tuple[tuple, str]


def check(fleet: Fleet) -> list[Problem]:
    problems: list[Problem] = []
    for rule in (_groups, _canary, _families, _service_hosts, _ports, _build_host, _paths,
                 _by_profile, _capabilities, _container_names, _gpu_memory, _gpu_settings,
                 _signing, _drain):
        problems.extend(rule(fleet))
    return problems


def _container_names(fleet: Fleet) -> Iterator[Problem]:
    """A service runs as rig-<name> and its kept version as rig-<name>-prev (commands/container):
    a service named `x-prev` would be x's kept container, and rolling x out would remove it."""
    for name in fleet.services:
        if name.endswith("-prev"):
            yield (("services", name), f"service name {name!r} ends in '-prev', which names the "
                   f"kept container of service {name[:-5]!r} (rig-{name}); choose another name")


def declared_gpu_memory(fleet: Fleet, service: str, host: str) -> tuple[int | None, tuple]:
    """(bytes, spec path) of the GPU memory `service` declares on `host`'s profile: by_profile
    over the service's runtime over defaults; (None, ()) when it declares none or uses no GPU."""
    spec, profile = fleet.services[service], fleet.hosts[host].profile
    layers = [(("defaults", "gpu_memory"), fleet.defaults),
              (("services", service, "runtime", "gpu_memory"), spec.runtime)]
    if profile in spec.by_profile:
        layers.append((("services", service, "by_profile", profile, "gpu_memory"),
                       spec.by_profile[profile]))
    gpus = "all" if spec.gpu else "none"
    found: tuple[int | None, tuple] = (None, ())
    for path, layer in layers:
        if layer.gpus is not None:
            gpus = layer.gpus
        if layer.gpu_memory is not None:
            found = (layer.gpu_memory, path)
    return found if gpus != "none" else (None, ())


def _gpu_memory(fleet: Fleet) -> Iterator[Problem]:
    """What a host's GPU services declare together must fit on its card, less the reserve."""
    from .runtime import show_size

    for host, spec in fleet.hosts.items():
        if spec.profile not in fleet.profiles:
            continue    # said by the profile rule: no card to budget against
        gpu = fleet.profiles[spec.profile].gpu
        declared = [(s, *declared_gpu_memory(fleet, s, host)) for s in fleet.services_on(host)]
        declared = [(s, size, path) for s, size, path in declared if size]
        if not declared:
            continue
        total = sum(size for _, size, _ in declared)
        if gpu is None:
            yield declared[0][2], (f"{declared[0][0]} declares gpu_memory on host {host}, whose "
                                   f"profile {spec.profile} has no GPU")
            continue
        room = gpu.memory_mib * 2**20 - fleet.rollout.gpu_reserve
        if room <= 0:
            yield ("rollout", "gpu_reserve"), (
                f"rollout.gpu_reserve {fleet.rollout.gpu_reserve // 2**20} MiB leaves nothing "
                f"of host {host}'s {gpu.model} ({gpu.memory_mib} MiB) for the GPU services "
                f"that declare gpu_memory there ({', '.join(s for s, _, _ in declared)})")
        elif total > room:
            parts = " + ".join(f"{s} {show_size(size)}" for s, size, _ in declared)
            yield declared[-1][2], (
                f"host {host} ({gpu.model}, {gpu.memory_mib} MiB): its GPU services declare "
                f"{parts} = {total // 2**20} MiB, more than the card's {gpu.memory_mib} MiB less "
                f"rollout.gpu_reserve {fleet.rollout.gpu_reserve // 2**20} MiB "
                f"({room // 2**20} MiB)")


def _gpu_settings(fleet: Fleet) -> Iterator[Problem]:
    """A service's own GPU settings must mean something on each host it runs on: gpu_memory on
    a service that uses no GPU there is ignored (an error, not a silent no-op), and a GPU index
    the host's profile does not have names no card. Each spec line is reported once."""
    seen: set[tuple] = set()
    for host, hspec in fleet.hosts.items():
        profile = fleet.profiles.get(hspec.profile)
        cards = 1 if profile is not None and profile.gpu is not None else 0
        for service in fleet.services_on(host):
            spec = fleet.services[service]
            layers = [(("services", service, "runtime"), spec.runtime)]
            if hspec.profile in spec.by_profile:
                layers.append((("services", service, "by_profile", hspec.profile),
                               spec.by_profile[hspec.profile]))
            wants = fleet.wants_gpu(service, host)
            for path, layer in layers:
                if layer.gpu_memory is not None and not wants and (*path, "gpu_memory") not in seen:
                    seen.add((*path, "gpu_memory"))
                    yield (*path, "gpu_memory"), (
                        f"{service} declares gpu_memory but uses no GPU on host {host} (gpu is "
                        "false and gpus none): set gpu: true, or remove gpu_memory")
                if isinstance(layer.gpus, list) and cards and max(layer.gpus) >= cards \
                        and (*path, "gpus") not in seen:
                    seen.add((*path, "gpus"))
                    yield (*path, "gpus"), (
                        f"{service}: GPU {max(layer.gpus)} does not exist on host {host}, whose "
                        f"profile {hspec.profile} has {cards} GPU (index 0)")


def _groups(fleet: Fleet) -> Iterator[Problem]:
    for host, spec in fleet.hosts.items():
        for i, group in enumerate(spec.groups):
            if group in fleet.hosts:
                yield ("hosts", host, "groups", i), f"group {group!r} has the name of a host"
            if group == "canary":
                yield (
                    ("hosts", host, "groups", i),
                    "'canary' is set by rollout.canary, not by host groups",
                )


def _canary(fleet: Fleet) -> Iterator[Problem]:
    for i, host in enumerate(fleet.rollout.canary):
        if host not in fleet.hosts:
            yield ("rollout", "canary", i), f"canary host {host!r} is not in hosts ({_names(fleet.hosts)})"


def _families(fleet: Fleet) -> Iterator[Problem]:
    for name, service in fleet.services.items():
        if service.family not in fleet.families:
            yield (
                ("services", name, "family"),
                f"unknown family {service.family!r} (families: {_names(fleet.families)})",
            )


def _service_hosts(fleet: Fleet) -> Iterator[Problem]:
    known = set(fleet.hosts) | set(fleet.groups())
    for name, service in fleet.services.items():
        for i, target in enumerate(service.hosts):
            if target not in known:
                yield (
                    ("services", name, "hosts", i),
                    f"{target!r} is neither a host nor a group ({_names(known)})",
                )


def _ports(fleet: Fleet) -> Iterator[Problem]:
    """Public ports, and with the proxy each service's two slot ports (proxy.slot_offsets),
    are taken once per host and are real ports."""
    for host in fleet.hosts:
        taken: dict[int, str] = {}
        for name in fleet.services_on(host):
            port = fleet.services[name].port
            wanted = [(port, f"service {name!r}")]
            if fleet.proxy.enabled:
                wanted += [(fleet.proxy.slot_port(port, slot), f"slot {slot} of service {name!r}")
                           for slot in ("a", "b")]
            for number, what in wanted:
                if number > 65535:
                    yield (("services", name, "port"),
                           f"{what} would listen on port {number} (port {port} + "
                           "proxy.slot_offsets), above 65535: choose a lower port or offsets")
                elif number in taken:
                    yield (("services", name, "port"),
                           f"port {number}" + (f" ({what})" if number != port else "")
                           + f" clashes with {taken[number]} on host {host!r}")
                    break   # one clash per service is enough to fix it
                else:
                    taken[number] = what


def _drain(fleet: Fleet) -> Iterator[Problem]:
    """The switch (drain, then the old container's stop) is one command: a drain the spec sets
    must fit in host_timeout with room to spare (the default is shortened to fit instead)."""
    limit = fleet.rollout.host_timeout
    explicit = "drain" in fleet.rollout.model_fields_set
    for host, spec in fleet.hosts.items():
        if spec.profile not in fleet.profiles:
            continue    # said by the profile rule
        for name in fleet.services_on(host):
            runtime = fleet.runtime(name, host)
            if runtime.drain is None and not explicit:
                continue
            drain = fleet.rollout.drain if runtime.drain is None else runtime.drain
            if drain + runtime.stop_timeout + 10 > limit:
                path = (("rollout", "drain") if runtime.drain is None
                        else _drain_path(fleet, name, host))
                yield (path, f"{name} on host {host}: drain {drain:g} s + stop_timeout "
                       f"{runtime.stop_timeout:g} s + 10 s leaves no room in rollout.host_timeout "
                       f"{limit:g} s: lower drain or raise host_timeout")


def _drain_path(fleet: Fleet, service: str, host: str) -> tuple:
    """Where the drain a service runs with on a host is set: its by_profile entry, its runtime,
    or the defaults."""
    spec, profile = fleet.services[service], fleet.hosts[host].profile
    if profile in spec.by_profile and spec.by_profile[profile].drain is not None:
        return ("services", service, "by_profile", profile, "drain")
    if spec.runtime.drain is not None:
        return ("services", service, "runtime", "drain")
    return ("defaults", "drain")


def _build_host(fleet: Fleet) -> Iterator[Problem]:
    if fleet.build.host and fleet.build.host not in fleet.hosts:
        yield ("build", "host"), f"build host {fleet.build.host!r} is not in hosts"


def _paths(fleet: Fleet) -> Iterator[Problem]:
    """Every spec path, symlinks resolved, stays in the spec's folder (the models already refuse
    absolute paths and `..` on their own; build.ca_bundle may be absolute)."""
    fields: list[tuple[tuple, str | None]] = [
        (("registry", "token_file"), fleet.registry.token_file),
        (("registry", "ca_file"), fleet.registry.ca_file),
        (("build", "ca_bundle"), fleet.build.ca_bundle),
        (("build", "signing", "key"), fleet.build.signing.key),
        (("build", "signing", "password_file"), fleet.build.signing.password_file),
    ]
    fields += [(("build", "signing", "public_keys", i), key)
               for i, key in enumerate(fleet.build.signing.public_keys)]
    fields += [(("families", name, "context"), f.context) for name, f in fleet.families.items()]
    fields += [(("services", name, "context"), s.context) for name, s in fleet.services.items()]
    fields += [(("services", name, "secrets", key, "file"), source.file)
               for name, s in fleet.services.items() for key, source in s.secrets.items()]
    for loc, value in fields:
        if value and not value.startswith("/") and not is_inside(fleet.base_dir / value, fleet.base_dir):
            yield loc, f"{value!r} leads out of the spec's folder (through a symlink)"


def _signing(fleet: Fleet) -> Iterator[Problem]:
    """Signatures are required only where there are keys to check them with."""
    if fleet.rollout.require_signed and not fleet.build.signing.public_keys:
        yield (("rollout", "require_signed"), "require_signed is on but build.signing."
               "public_keys lists no key to check signatures with")
    if fleet.rollout.require_provenance and not fleet.requires_signed:
        yield (("rollout", "require_provenance"), "require_provenance needs signatures checked "
               "(rollout.require_signed and build.signing.public_keys): a provenance is only "
               "trusted for its signature")


def _by_profile(fleet: Fleet) -> Iterator[Problem]:
    """by_profile names a profile of a host that runs the service (else it is a typo)."""
    profiles = {spec.profile for spec in fleet.hosts.values()}
    if not profiles <= set(fleet.profiles):
        return  # a missing profile file is reported already
    for name, service in fleet.services.items():
        for profile in service.by_profile:
            if profile not in profiles:
                yield (("services", name, "by_profile", profile),
                       f"no host has profile {profile!r} "
                       f"(profiles: {_names(profiles)})")


def _capabilities(fleet: Fleet) -> Iterator[Problem]:
    """A capability both dropped and added by name is a contradiction (ALL then X is fine)."""
    layers = [(("defaults",), fleet.defaults)]
    for name, service in fleet.services.items():
        layers.append((("services", name, "runtime"), service.runtime))
        layers += [(("services", name, "by_profile", p), r) for p, r in service.by_profile.items()]
    for loc, layer in layers:
        both = sorted(set(layer.cap_drop or []) & set(layer.cap_add or []))
        if both:
            yield loc + ("cap_add",), f"{', '.join(both)} is both dropped and added"


def _names(items) -> str:
    return ", ".join(sorted(items)) or "none"
