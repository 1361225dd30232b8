"""The machine profile on each host: JSON for tools, an env file for containers, its hash."""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy, operation

from rig.commands import host as cmd

from .state import changes_host, state_of
from .util import fleet_of, host_name


def profile_files(profile) -> dict[str, str]:
    digest = profile.content_hash()
    return {
        cmd.PROFILE_JSON: json.dumps(profile.document(), indent=2, sort_keys=True) + "\n",
        cmd.PROFILE_ENV: cmd.profile_env(profile.runtime_env(), digest),
        cmd.PROFILE_HASH: digest + "\n",
    }


@operation()
@changes_host
def machine_profile(files: dict):
    """Each of /etc/rig/machine-profile.json, machine.env and machine-profile.sha256 has the
    rendered content, mode 0644.

    + files: path -> content
    """
    facts = state_of(fleet_of(host))
    stale = [p for p, content in files.items() if facts.file_hashes.get(p) != cmd.sha256(content)]
    if not stale:
        host.noop("machine profile is up to date")
        return
    for path in stale:
        yield cmd.write_file(path, files[path], "0644")


@deploy("Machine profile")
def push_profile():
    fleet = fleet_of(host)
    machine_profile(name="machine profile", files=profile_files(fleet.profile_of(host_name(host))))
