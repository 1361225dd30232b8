"""Docker engine, buildx, daemon.json, registry trust and login, the docker group.

Each operation reads the HostState fact and yields commands only where the host differs;
otherwise it says why nothing was done with host.noop()."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FunctionCommand, deploy, operation

from rig.commands import host as cmd

from .state import certs_path, changes_host, state_of
from .util import fleet_of, host_shell


@operation()
@changes_host
def daemon_config(content: str):
    """/etc/docker/daemon.json has exactly `content`. Written before the engine is installed
    (the package starts dockerd at once); a change to a running engine restarts it once.

    + content: the rendered daemon.json
    """
    facts = state_of(fleet_of(host))
    if facts.file_hashes.get("/etc/docker/daemon.json") == cmd.sha256(content):
        host.noop("daemon.json is up to date")
        return
    yield cmd.write_file("/etc/docker/daemon.json", content, "0644")
    if facts.docker_active:
        yield "systemctl restart docker"


@operation()
@changes_host
def engine_packages(packages: dict, repo_commands: list):
    """Engine and buildx packages installed at the pinned versions (any version if unpinned).

    + packages: name -> version or None
    + repo_commands: commands that add a third-party apt repository first (docker-ce)
    """
    facts = state_of(fleet_of(host))
    wanted = {
        name: version for name, version in packages.items()
        if name not in facts.packages or (version and facts.packages[name] != version)
    }
    if not wanted:
        host.noop(f"installed: {', '.join(packages)}")
        return
    yield from repo_commands
    yield from cmd.apt_install(wanted)


@operation()
@changes_host
def engine_service():
    """docker.service enabled and running."""
    facts = state_of(fleet_of(host))
    if facts.docker_active and facts.docker_enabled:
        host.noop("docker is enabled and running")
        return
    yield "systemctl enable --now docker"


@operation()
@changes_host
def buildx_binary(url: str, sha256: str, version: str):
    """The buildx CLI plugin at `version` from a pinned URL, checked against its sha256.

    + url: binary download URL (an internal mirror for air-gapped hosts)
    + sha256: expected digest of the binary
    + version: expected `docker buildx version`; another version is replaced
    """
    facts = state_of(fleet_of(host))
    if facts.buildx_version == version.lstrip("v"):
        host.noop(f"buildx {version} installed")
        return
    yield from cmd.buildx_binary(url, sha256)


@operation()
@changes_host
def registry_trust(ca_pem: str, path: str):
    """The registry's CA at /etc/docker/certs.d/<registry>/ca.crt (read per pull: no restart).

    + ca_pem: the CA certificate
    + path: where it goes
    """
    facts = state_of(fleet_of(host))
    if facts.file_hashes.get(path) == cmd.sha256(ca_pem):
        host.noop("registry CA installed")
        return
    yield cmd.write_file(path, ca_pem, "0444")   # read-only (CIS Docker Benchmark 3.20)


@operation()
@changes_host
def registry_login(registry: str, username: str, token: str):
    """Logged in to `registry`: the stored auth matches the current token (compared by hash).
    The token goes to `docker login --password-stdin` on stdin: never in argv or output.

    + registry: registry host[:port]
    + username: account
    + token: the secret (kept in memory only)
    """
    facts = state_of(fleet_of(host))
    if facts.login_hash == cmd.registry_auth_hash(username, token):
        host.noop(f"logged in to {registry} as {username}")
        return
    yield FunctionCommand(_login, [cmd.login_command(registry, username), token, registry], {})


def _login(state, host, command: str, token: str, registry: str) -> bool:
    """docker login with the token on stdin (pyinfra's `_stdin`): never in argv or output."""
    result = host_shell(host, command, stdin=token, timeout=60)
    if not result.ok:
        from pyinfra import logger

        logger.error(f"{host.print_prefix}registry login to {registry} failed: {result.stderr[-1:]}")
    return result.ok


@operation()
@changes_host
def docker_group_member(user: str):
    """`user` is in the docker group.

    + user: an existing account
    """
    facts = state_of(fleet_of(host))
    if user in facts.docker_group:
        host.noop(f"{user} is in the docker group")
        return
    if user not in facts.users:
        # A missing user is a mistake in the spec for this host, not something to create.
        yield cmd.fail(f"deploy_user {user!r} does not exist on this host")
        return
    yield cmd.docker_group_add(user)


@deploy("Docker engine")
def install_docker(token: str | None = None):
    """Engine, buildx, daemon.json, registry trust and login, docker group."""
    fleet = fleet_of(host)
    nvidia = fleet.gpu_enabled(host.data.get("rig_host") or host.name)
    daemon_config(name="daemon.json", content=cmd.daemon_json(fleet.bootstrap.daemon, nvidia))
    facts = state_of(fleet)
    repo = []
    if fleet.bootstrap.docker.source == "docker-ce":
        distro = "ubuntu" if facts.os_id == "ubuntu" else "debian"
        repo = cmd.docker_ce_repo(fleet.bootstrap.docker.repo_url, distro, facts.os_codename)
    engine_packages(name="engine packages",
                    packages=cmd.engine_packages(fleet, facts.os_id, facts.os_version),
                    repo_commands=repo)
    engine_service(name="docker service")
    buildx = fleet.bootstrap.buildx
    if buildx.source == "binary":
        buildx_binary(name="buildx binary", url=buildx.url, sha256=buildx.sha256,
                      version=buildx.version)
    ca_path = certs_path(fleet)
    if ca_path:
        registry_trust(name="registry CA", ca_pem=fleet.path(fleet.registry.ca_file).read_text(),
                       path=ca_path)
    if token:
        registry_login(name="registry login", registry=fleet.registry.host,
                       username=fleet.registry.username, token=token)
    if fleet.bootstrap.deploy_user:
        docker_group_member(name="docker group", user=fleet.bootstrap.deploy_user)
