"""Drive pyinfra through its Python API: load an inventory file (with group_data), connect,
run @deploy functions, and report per host what changed, read from pyinfra's own results.

This is the one place rig talks to pyinfra's engine; tasks/ holds what runs on hosts."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra.api import BaseStateCallback, Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_config, ctx_inventory, ctx_state

from .errors import RigError


@dataclass
class HostResult:
    name: str
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    not_run: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def tcp_nodelay_enabled() -> bool:
    """TCP_NODELAY on the SSH socket (LAB-NOTES: 49 ms -> 7.5 ms per command round trip)."""
    return os.environ.get("RIG_TCP_NODELAY", "1") != "0"


class _Progress(BaseStateCallback):
    """Prints one line per operation per host, and remembers why a host could not connect."""

    def __init__(self, say: Callable[[str, str], None] | None):
        self.say = say
        self.connect_errors: dict[str, str] = {}

    def host_connect(self, state, host):
        if tcp_nodelay_enabled():
            client = getattr(host.connector, "client", None)
            transport = client.get_transport() if client else None
            if transport is not None:
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def host_connect_error(self, state, host, error):
        message = str(error.args[0] if getattr(error, "args", None) else error)
        self.connect_errors[host.name] = message.splitlines()[0] if message else repr(error)

    def operation_end(self, state, op_hash):
        """After an operation ran on every host (results are complete only then)."""
        if not self.say:
            return
        for host in state.inventory:
            data = state.ops[host].get(op_hash)
            if data is None or not data.operation_meta.is_complete():
                continue
            meta = data.operation_meta
            if meta.did_error():
                self.say(host.name, f"FAILED   {_op_name(state, op_hash)}")
            elif meta.did_change():
                self.say(host.name, f"changed  {_op_name(state, op_hash)}")


class _State(State):
    """A State that can be run more than once: operations that already ran are not run again
    (rollouts add one wave's operations, run them, look at the results, then add the next)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.done: set[str] = set()

    def get_op_order(self):
        return [op for op in super().get_op_order() if op not in self.done]


def _op_name(state: State, op_hash: str) -> str:
    return ", ".join(sorted(state.get_op_meta(op_hash).names))


class _PyinfraLog(logging.Handler):
    """pyinfra's warnings and errors (a failed command's stderr) as indented lines."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if "executed 0 commands" in message:
            return  # a FunctionCommand that said no (a health gate): rig reports why itself
        for line in message.splitlines():
            print(f"      {_strip_ansi(line)}", file=sys.stderr)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Session:
    """with Session(repo, 'inventory/lab.py') as s: s.run(deploy) -> {host: HostResult}."""

    def __init__(self, repo: Path, inventory: str, limit: list[str] | None = None,
                 say: Callable[[str, str], None] | None = None, parallel: int | None = None):
        self.repo, self.inventory_file, self.limit, self.say = repo, inventory, limit, say
        self.parallel = parallel
        self.state: State | None = None

    def __enter__(self) -> Session:
        from pyinfra_cli.inventory import make_inventory

        inventory_path = (self.repo / self.inventory_file) if not Path(self.inventory_file).is_absolute() \
            else Path(self.inventory_file)
        if not inventory_path.is_file():
            raise RigError(f"{self.inventory_file}: inventory file not found")
        logger = logging.getLogger("pyinfra")
        logger.handlers[:] = [_PyinfraLog(logging.WARNING)]
        logger.propagate = False

        state = _State(check_for_changes=False)
        state.cwd = str(self.repo)
        ctx_state.set(state)
        config = Config(PARALLEL=self.parallel or 0, FAIL_PERCENT=None)
        ctx_config.set(config)
        if str(self.repo) not in sys.path:
            sys.path.insert(0, str(self.repo))
        inventory = make_inventory(str(inventory_path), cwd=str(self.repo),
                                   group_data_directories=[str(self.repo / "group_data")])
        ctx_inventory.set(inventory)
        limit = None
        if self.limit:
            names = {h.name for h in inventory}
            unknown = [h for h in self.limit if h not in names and not inventory.get_group(h, None)]
            if unknown:
                raise RigError(f"--limit: unknown host or group {', '.join(unknown)} "
                               f"(hosts: {', '.join(sorted(names))})")
            limit = [h for h in inventory if h.name in self.limit
                     or any(g in self.limit for g in h.groups)]
        state.init(inventory, config, initial_limit=limit)
        self.progress = _Progress(self.say)
        state.add_callback_handler(self.progress)
        self.state = state
        logger.setLevel(logging.CRITICAL)  # rig reports unreachable hosts itself, one line each
        try:
            connect_all(state)
        except PyinfraError:
            pass  # every host failed: reported below with the reason for each
        finally:
            logger.setLevel(logging.WARNING)
        if state.failed_hosts:
            lines = [f"{h.name}: unreachable: {self.progress.connect_errors.get(h.name, 'no reason given')}"
                     for h in sorted(state.failed_hosts, key=lambda h: h.name)]
            self._disconnect()
            raise RigError(*lines)
        return self

    @property
    def hosts(self):
        return sorted(self.state.active_hosts, key=lambda h: list(self.state.inventory).index(h))

    def run(self, deploy_func, *args, **kwargs) -> dict[str, HostResult]:
        """Run a @deploy on every active host; per host what changed, from pyinfra's results."""
        state = self.state
        before = {h: set(state.ops[h]) for h in state.inventory}
        # In API mode pyinfra names an operation by its index in the host's list. After a run
        # in which hosts got different numbers of operations, the next operation on a shorter
        # host would reuse a name that already ran elsewhere; equal lengths keep names new.
        longest = max((h.op_hash_order for h in state.inventory), key=len)
        for h in state.inventory:
            h.op_hash_order.extend(longest[len(h.op_hash_order):])
        state.is_executing = False  # run_ops leaves it set; then pyinfra would run new ops at once
        add_deploy(state, deploy_func, *args, **kwargs)
        try:
            run_ops(state)
        except PyinfraError:
            pass  # failed hosts are reported from the per-op results below
        results: dict[str, HostResult] = {}
        for host in state.inventory:
            if host not in state.activated_hosts:
                continue
            result = HostResult(host.name)
            for op_hash in state.get_op_order():
                if op_hash not in state.ops[host] or op_hash in before[host]:
                    continue
                meta = state.ops[host][op_hash].operation_meta
                name = _op_name(state, op_hash)
                if not meta.is_complete():
                    result.not_run += 1
                elif meta.did_error():
                    result.failed.append(name)
                elif meta.did_change():
                    result.changed.append(name)
                else:
                    result.unchanged += 1
            results[host.name] = result
        state.done.update(state.get_op_order())
        return results

    def revive(self, names) -> None:
        """Make failed hosts active again (to roll them back after a failed wave)."""
        hosts = {h for h in self.state.failed_hosts if h.name in set(names)}
        self.state.failed_hosts -= hosts
        self.state.active_hosts |= hosts

    def _disconnect(self) -> None:
        if self.state is not None:
            disconnect_all(self.state)

    def __exit__(self, *exc) -> None:
        self._disconnect()
