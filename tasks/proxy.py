"""The per-host proxy: HAProxy and socat from the distribution, haproxy.cfg and the services'
maintenance answers from the spec, the service running, and rig's bridge network.

Each operation reads the HostState fact and yields commands only where the host differs. A
changed haproxy.cfg is checked by `haproxy -c` before it replaces the old one, and a running
proxy reloads (open connections stay with the old worker); which slot is live survives in the
server-state file (rig/commands/proxy.py)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from rig.commands import host as cmd
from rig.commands import proxy
from rig.commands.base import all_of, fail, sh, write_file

from .state import changes_host, state_of
from .util import fleet_of


@operation()
@changes_host
def proxy_packages():
    """haproxy and socat (the admin socket's client) installed from the distribution."""
    facts = state_of(fleet_of(host))
    missing = {name: None for name in proxy.PACKAGES if name not in facts.packages}
    if not missing:
        host.noop(f"installed: {', '.join(proxy.PACKAGES)}")
        return
    yield from cmd.apt_install(missing)


@operation()
@changes_host
def proxy_config(config: str, errorfiles: dict):
    """haproxy.cfg and each service's 503 maintenance answer have exactly this content; a
    config that `haproxy -c` refuses never replaces the running one; a running proxy reloads.

    + config: haproxy.cfg
    + errorfiles: service -> its 503 answer
    """
    facts = state_of(fleet_of(host))
    stale = {s: text for s, text in sorted(errorfiles.items())
             if facts.file_hashes.get(f"{proxy.ERRORS_DIR}/{s}.503") != cmd.sha256(text)}
    config_stale = facts.file_hashes.get(proxy.CONFIG) != cmd.sha256(config)
    if not stale and not config_stale:
        host.noop("haproxy.cfg and the maintenance answers are up to date")
        return
    for service, text in stale.items():
        yield write_file(f"{proxy.ERRORS_DIR}/{service}.503", text, "0644")
    if config_stale:
        yield all_of(write_file(proxy.CONFIG + ".rig-new", config, "0644"),
                     sh("haproxy", "-c", "-q", "-f", proxy.CONFIG + ".rig-new"),
                     sh("mv", "-f", proxy.CONFIG + ".rig-new", proxy.CONFIG))
    if facts.haproxy_active:
        yield proxy.save_state()
        yield "systemctl reload haproxy"


@operation()
@changes_host
def proxy_service():
    """haproxy.service enabled and running, with rig's admin socket (a removed socket file
    comes back only with a restart). A unit that failed too often to be started again (a
    broken config the operation before just replaced) is reset first."""
    facts = state_of(fleet_of(host))
    if facts.haproxy_active and facts.haproxy_enabled and facts.haproxy_socket:
        host.noop("haproxy is enabled and running")
        return
    yield "systemctl enable haproxy"
    yield "systemctl reset-failed haproxy 2>/dev/null || true"
    yield "systemctl restart haproxy"


@operation()
@changes_host
def service_network(network: str):
    """The bridge network service containers run on.

    + network: its name (proxy.network)
    """
    facts = state_of(fleet_of(host))
    if facts.networks.get(network) == "bridge":
        host.noop(f"network {network} exists")
        return
    if network in facts.networks:
        yield fail(f"network {network} exists with driver {facts.networks[network]}, not "
                   "bridge: remove it, or choose another proxy.network")
        return
    yield sh("docker", "network", "create", "--driver", "bridge", network)


@deploy("Proxy")
def install_proxy():
    fleet = fleet_of(host)
    if not fleet.proxy.enabled:
        return
    name = host.data.get("rig_host") or host.name
    proxy_packages(name="proxy packages")
    proxy_config(name="haproxy.cfg", config=proxy.config_text(fleet, name),
                 errorfiles={s: proxy.errorfile(s, fleet.proxy.retry_after)
                             for s in sorted(fleet.services)})
    proxy_service(name="haproxy service")
    service_network(name="service network", network=fleet.proxy.network)
