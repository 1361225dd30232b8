"""What a bootstrapped host has, as file contents and shell commands (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex

from ..config import Fleet
from ..config.bootstrap import DaemonSpec
from .base import fail, write_file  # noqa: F401  (re-exported: tasks use them from here)

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
NVIDIA_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
PLUGIN_DIR = "/usr/local/lib/docker/cli-plugins"
PROFILE_JSON = "/etc/rig/machine-profile.json"
PROFILE_ENV = "/etc/rig/machine.env"
PROFILE_HASH = "/etc/rig/machine-profile.sha256"
APT_ENV = "DEBIAN_FRONTEND=noninteractive"


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def daemon_json(spec: DaemonSpec, nvidia: bool) -> str:
    """/etc/docker/daemon.json, canonical (sorted keys) so its hash is stable across runs.

    On GPU hosts it carries the nvidia runtime entry that `nvidia-ctk runtime configure`
    would add: rig owns this file, so it writes that entry itself instead of letting a second
    tool rewrite the file (which would make every later run see a difference)."""
    doc: dict = {
        "log-driver": spec.log_driver,
        "log-opts": {"max-size": spec.log_max_size, "max-file": str(spec.log_max_file)},
        "live-restore": spec.live_restore,
        "userland-proxy": spec.userland_proxy,
        "no-new-privileges": spec.no_new_privileges,
    }
    if spec.icc or spec.iptables is not False:  # --icc=false needs iptables (dockerd says so)
        doc["icc"] = spec.icc
    if spec.storage_driver:
        doc["storage-driver"] = spec.storage_driver
    if spec.registry_mirrors:
        doc["registry-mirrors"] = list(spec.registry_mirrors)
    if spec.bridge is not None:
        doc["bridge"] = spec.bridge
    if spec.iptables is not None:
        doc["iptables"] = spec.iptables
    if spec.ip_forward is not None:
        doc["ip-forward"] = spec.ip_forward
    if nvidia:
        doc["runtimes"] = {"nvidia": {"path": "nvidia-container-runtime", "args": []}}
        doc["default-runtime"] = "nvidia"
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def engine_packages(fleet: Fleet, os_id: str = "debian", os_version: str = "12"
                    ) -> dict[str, str | None]:
    """Packages (name -> pinned version or None) for the engine and buildx the spec asks for.
    Debian 13 moved the docker CLI out of docker.io into docker-cli (a Recommends, which rig
    does not install: it would bring needrestart), so it is named explicitly there."""
    docker, buildx = fleet.bootstrap.docker, fleet.bootstrap.buildx
    packages: dict[str, str | None] = {}
    if docker.source == "distro":
        packages["docker.io"] = None
        if os_id == "debian" and _major(os_version) >= 13:
            packages["docker-cli"] = None
    else:
        packages.update({"docker-ce": docker.version, "docker-ce-cli": docker.version,
                         "containerd.io": None})
    if buildx.source == "distro":
        packages["docker-buildx"] = None
    elif buildx.source == "docker-ce":
        packages["docker-buildx-plugin"] = buildx.version
    return packages


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 99  # testing/sid have no VERSION_ID: newest


def apt_install(packages: dict[str, str | None], update: bool = True) -> list[str]:
    """apt-get install of name[=version] packages, non-interactive, no recommends."""
    specs = [f"{name}={version}" if version else name for name, version in packages.items()]
    commands = [f"{APT_ENV} apt-get update -qq"] if update else []
    commands.append(
        f"{APT_ENV} apt-get install -y -qq --no-install-recommends "
        + " ".join(shlex.quote(s) for s in specs)
    )
    return commands


_APT_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+")
_APT_WORD = re.compile(r"[a-z0-9][a-z0-9.+_-]*")


def docker_ce_repo(repo_url: str, distro: str, codename: str) -> list[str]:
    """Docker's apt repository with its key, refusing a key whose fingerprint is not Docker's.

    The source line is a line of fields: repo_url must be one URL (no spaces, quotes or line
    breaks) and distro/codename single words, else ValueError (the spec model refuses such a
    repo_url already; distro and codename come from the host). Every value is shell-quoted."""
    if not _APT_URL.fullmatch(repo_url):
        raise ValueError(f"docker apt repository URL {repo_url!r} is not a plain http(s) URL")
    for what, word in (("distribution", distro), ("codename", codename)):
        if not _APT_WORD.fullmatch(word):
            raise ValueError(f"{what} {word!r} is not a plain apt word")
    base = f"{repo_url.rstrip('/')}/{distro}"
    source = f"deb [arch=amd64 signed-by={DOCKER_KEYRING}] {base} {codename} stable"
    return [
        f"{APT_ENV} apt-get update -qq && {APT_ENV} apt-get install -y -qq ca-certificates curl gnupg",
        "install -m 0755 -d /etc/apt/keyrings",
        f"curl -fsSL {shlex.quote(base + '/gpg')} -o {DOCKER_KEYRING}.new",
        f"gpg --show-keys --with-colons {DOCKER_KEYRING}.new | grep -q "
        f"'^fpr:*{DOCKER_KEY_FINGERPRINT}:' "
        f"|| {{ echo 'Docker repo key fingerprint mismatch' >&2; rm -f {DOCKER_KEYRING}.new; exit 1; }}",
        f"mv {DOCKER_KEYRING}.new {DOCKER_KEYRING} && chmod a+r {DOCKER_KEYRING}",
        f"echo {shlex.quote(source)} > /etc/apt/sources.list.d/docker.list",
    ]


def buildx_binary(url: str, sha: str) -> list[str]:
    """Download a pinned buildx binary, check its sha256, install it as the CLI plugin."""
    target = f"{PLUGIN_DIR}/docker-buildx"
    return [
        f"install -m 0755 -d {PLUGIN_DIR}",
        f"curl -fsSL {shlex.quote(url)} -o {target}.new",
        f"echo '{sha}  {target}.new' | sha256sum -c --quiet "
        f"|| {{ echo 'buildx sha256 mismatch' >&2; rm -f {target}.new; exit 1; }}",
        f"chmod 0755 {target}.new && mv {target}.new {target}",
    ]


def nvidia_repo(repo_url: str) -> list[str]:
    """NVIDIA container toolkit apt repository and key (the documented stable/deb layout)."""
    base = repo_url.rstrip("/")
    return [
        f"curl -fsSL {shlex.quote(base + '/gpgkey')} | gpg --dearmor --yes -o {NVIDIA_KEYRING}",
        f"curl -fsSL {shlex.quote(base + '/stable/deb/nvidia-container-toolkit.list')} "
        f"| sed 's#deb https://#deb [signed-by={NVIDIA_KEYRING}] https://#g' "
        "> /etc/apt/sources.list.d/nvidia-container-toolkit.list",
    ]


def gpu_smoke(image: str) -> str:
    return f"docker run --rm --gpus all {shlex.quote(image)} nvidia-smi"


def registry_auth_hash(username: str, token: str) -> str:
    """sha256 of the `auth` value docker login stores: lets a fact compare logins by hash, so
    neither the token nor its base64 ever crosses the wire back to rig."""
    return sha256(base64.b64encode(f"{username}:{token}".encode()).decode())


def login_command(registry: str, username: str) -> str:
    """docker login reading the token on stdin: never in argv, never in a file."""
    return f"docker login --username {shlex.quote(username)} --password-stdin {shlex.quote(registry)}"


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An env file is one KEY=value per line, read literally (no quotes, no escapes): a value may
# hold anything but a line break (\n, \r and the Unicode ones) or another control character.
_NOT_IN_ENV_VALUE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def profile_env(env: dict[str, str], profile_hash: str) -> str:
    """The env file service containers load (docker run --env-file): KEY=value lines.

    ValueError for a key that is not a variable name or a value with a line break or control
    character: it would add variables of its own (the spec model refuses these already)."""
    env = {**env, "RIG_PROFILE_HASH": profile_hash}
    for key, value in env.items():
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"environment name {key!r} is not a variable name")
        if _NOT_IN_ENV_VALUE.search(value):
            raise ValueError(f"environment value of {key} holds a line break or control character")
    lines = [f"{key}={value}" for key, value in sorted(env.items()) if key != "RIG_PROFILE_HASH"]
    lines.append(f"RIG_PROFILE_HASH={profile_hash}")
    return "\n".join(lines) + "\n"


def docker_group_add(user: str) -> str:
    return f"usermod -aG docker {shlex.quote(user)}"


UPTIME = "/proc/uptime"      # the host's own clock: seconds since it booted (no wall clock
                             # to jump, and a frozen host's kernel keeps counting)
NOT_RUN = 97                 # the exit status of a command the host began too late (start_guard)


def greeting() -> str:
    """The first command rig runs on a host, once per rig command: `sudo-ok` when the SSH user
    may run anything as root without a password (sudo -n; nothing a tool could mistake for a
    password prompt otherwise), then `uptime <seconds>`, where the host's clock stands (what
    start_guard counts in)."""
    return ("sudo -n true >/dev/null 2>&1 && echo sudo-ok || echo sudo-refused; "
            f"{{ read _rig_up _ <{UPTIME} && echo \"uptime $_rig_up\"; }} 2>/dev/null; true")


def parse_greeting(stdout: str) -> tuple[bool, float | None]:
    """(sudo works, the host's uptime in seconds or None) from greeting()'s output."""
    lines = stdout.splitlines()
    uptime = None
    for line in lines:
        word, _, value = line.partition(" ")
        if word == "uptime":
            try:
                uptime = float(value)
            except ValueError:
                uptime = None
    return "sudo-ok" in lines, uptime


def start_guard(sent: float, wait: float) -> str:
    """The words before every command rig sends to a host it has greeted: the host refuses to
    begin the command once rig has stopped waiting for it, `wait` s after `sent` (its own
    clock, greeting()). A host frozen with a command in flight (a paused VM, a stalled
    hypervisor) otherwise runs, when it wakes, what rig has given up on and reported: a swap
    on a host rig called lost. Refused, it exits NOT_RUN and says why (if anyone listens).
    One second of slack for the clocks' rounding; a host whose clock cannot be read runs it."""
    late = int(sent) + int(wait) + 1
    # (for undone_if_late: when rig stops waiting, in hundredths of a second, /proc/uptime's)
    return (f'_rig_late_cs={int(sent * 100) + int(wait) * 100}; '
            f'if read _rig_up _ 2>/dev/null <{UPTIME} && [ "${{_rig_up%.*}}" -gt {late} ]; then '
            f'echo "rig: not run: the host began it $((${{_rig_up%.*}} - {int(sent)})) s after '
            f'rig sent it, and rig waits {int(wait)} s" >&2; exit {NOT_RUN}; fi;')


LATE_MARGIN = 1   # second past rig's deadline for a step: rig has given up on it for sure


def undone_if_late(undo: str) -> str:
    """The last words of a step that changes the host (a swap): if the host gets there more
    than LATE_MARGIN after rig stopped waiting for the step (the start guard's `_rig_late_cs`,
    in the host's clock, which the greeting dates so that it can only be early), `undo` puts
    back what the step replaced. The guard stops a step the host begins too late; this catches
    a host frozen in the middle of one, which would otherwise wake to a change no gate judged
    (and, behind the proxy, the 503 maintenance answer) on a host rig has called lost. Not
    late, or no clock (no `_rig_late_cs`): nothing. /proc/uptime has two decimals: its digits
    without the dot are hundredths."""
    return (f'if [ -n "${{_rig_late_cs:-}}" ] && read _rig_now _ 2>/dev/null <{UPTIME} && '
            f'[ "${{_rig_now%.*}}${{_rig_now#*.}}" -gt $((_rig_late_cs + {LATE_MARGIN * 100})) ]; '
            'then echo "rig: the host ended this step after rig had stopped waiting for it: '
            f'undone" >&2; {undo}; fi')
