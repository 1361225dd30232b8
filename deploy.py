"""Plain pyinfra entry point: the same converge as `rig bootstrap`.

    pyinfra inventory/lab.py deploy.py
    GHCR_TOKEN=... pyinfra inventory/production.py deploy.py

The registry token is read from the variable the spec names (registry.token_env) or its
token_file; without one, the login step is skipped with a warning."""

from pyinfra import host, logger

from rig.errors import RigError
from rig.secrets import registry_token
from tasks.bootstrap import bootstrap

try:
    token = registry_token(host.data.rig_fleet)
except RigError as e:
    logger.warning(f"{host.name}: {e}; registry login skipped")
    token = None

bootstrap(token=token)
