"""Commands as data: argv lists quoted once, where they become a shell line, and a few
combinators for the shapes rig needs (after Kamal's commands/base.rb).

    sh("docker", "rm", "-f", name)                  -> docker rm -f rig-x
    all_of(sh("mkdir", "-p", d), sh("touch", f))     -> mkdir -p /d && touch /f
    any_of(sh("test", "-f", f), fail("missing"))     -> test -f /f || { echo ...; exit 1; }
    pipe(sh("printf", "%s", data), sh("base64", "-d"))
    write_file("/etc/x", "content", "0644")          -> atomic write in one round trip

Every value reaches the shell through `sh()` (shlex.quote); a `Cmd` is shell text that is
already safe (fixed syntax, or built by these functions) and is inserted as it is."""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterable


class Cmd(str):
    """A rendered shell line (a str, so pyinfra runs it as it is). `compound` lines are wrapped
    in { ...; } when combined with others."""

    compound: bool = False
    op: str | None = None   # the list operator that joined it: "&&", "||" or ";"

    def __new__(cls, line: str, compound: bool = False, op: str | None = None) -> Cmd:
        self = super().__new__(cls, line)
        self.compound, self.op = compound, op
        return self

    @property
    def line(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Cmd({self.line!r})"


Part = str | int | float | Cmd


def _word(part: Part) -> str:
    if isinstance(part, Cmd):
        return part.line
    return shlex.quote(str(part))


def sh(*argv: Part) -> Cmd:
    """One simple command from argv: every str/number quoted, a Cmd inserted as it is."""
    return Cmd(" ".join(_word(a) for a in argv))


def argv_line(argv: Iterable[Part]) -> Cmd:
    return sh(*argv)


def _child(cmd: Cmd | str, op: str | None = None) -> str:
    """A command as part of a bigger line: a list in braces, unless it is joined by the same
    (associative) operator it is made of."""
    cmd = cmd if isinstance(cmd, Cmd) else Cmd(cmd)
    if cmd.compound and not (op and cmd.op == op):
        return f"{{ {cmd.line}; }}"
    return cmd.line


def _join(separator: str, cmds, is_list: bool = True) -> Cmd:
    """Lists (&&, ||, ;) are compound: a list inside another list, a pipe or a redirect is
    wrapped in braces. A pipe binds tighter than a list, so it needs none."""
    cmds = [c for c in cmds if c is not None]
    if not cmds:
        return Cmd("true")
    if len(cmds) == 1:
        return cmds[0] if isinstance(cmds[0], Cmd) else Cmd(cmds[0])
    op = separator.strip() if is_list else None
    return Cmd(separator.join(_child(c, op) for c in cmds), compound=is_list, op=op)


def all_of(*cmds: Cmd) -> Cmd:
    """Each runs only if the one before succeeded (&&)."""
    return _join(" && ", cmds)


def any_of(*cmds: Cmd) -> Cmd:
    """The first that succeeds ends it (||)."""
    return _join(" || ", cmds)


def seq(*cmds: Cmd) -> Cmd:
    """One after another, whatever each returns (;)."""
    return _join("; ", cmds)


def pipe(*cmds: Cmd) -> Cmd:
    return _join(" | ", cmds, is_list=False)


def quiet(cmd: Cmd) -> Cmd:
    """Output and errors discarded."""
    return Cmd(f"{_child(cmd)} >/dev/null 2>&1")


def no_stderr(cmd: Cmd) -> Cmd:
    return Cmd(f"{_child(cmd)} 2>/dev/null")


def ok(cmd: Cmd) -> Cmd:
    """Never fails the line: `cmd || true`."""
    return any_of(cmd, Cmd("true"))


def to_file(cmd: Cmd, path: str, append: bool = False) -> Cmd:
    return Cmd(f"{_child(cmd)} {'>>' if append else '>'} {shlex.quote(path)}")


def subshell(cmd: Cmd) -> Cmd:
    return Cmd(f"( {cmd.line} )")


FAILED_MARK = "rig: failed: "   # concurrently's line naming a part that failed (runner.py)


def concurrently(*cmds: Cmd, then: Cmd | None = None, labels: list[str] | None = None) -> Cmd:
    """Each in its own subshell, all at once (an `exit` in one ends only that one); once all
    have ended, `then` (whatever they returned), and the line fails if any of them failed.
    labels: each command's name; one that failed is named on stderr (FAILED_MARK)."""
    cmds = [c for c in cmds if c is not None]
    if not cmds or (len(cmds) == 1 and then is None):
        return seq(*cmds, then)
    labels = labels or [None] * len(cmds)
    starts = "; ".join(f"( {c.line} ) & _p{i}=$!" for i, c in enumerate(cmds))
    waits = "; ".join(f"wait $_p{i} || _rc=1" if label is None else
                      f"wait $_p{i} || {{ _rc=1; echo {shlex.quote(FAILED_MARK + label)} >&2; }}"
                      for i, label in enumerate(labels))
    after = f"{_child(then)}; " if then is not None else ""
    return Cmd(f"_rc=0; {starts}; {waits}; {after}[ $_rc -eq 0 ]", compound=True, op=";")


_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./-]+")


def spooled(cmd: Cmd, spool: str) -> Cmd:
    """cmd, in a subshell whose output never meets the SSH channel while it runs: stdout to
    /dev/null, stderr to `spool`.<pid>, shown on stderr once it has ended (it fails as cmd
    failed). Whoever reads the channel may be gone by then (rig killed, or rig gave up on a
    frozen host that then woke): a write to the dead channel kills the writer with SIGPIPE, and
    a step of several commands (stop the old container, start the new) stopped after its
    first. Spooled, cmd runs to its end either way; only the last `cat` meets the dead channel.
    For commands whose stdout no one reads (operations that change a host)."""
    if not _SAFE_PATH.fullmatch(spool):
        raise ValueError(f"spool path {spool!r}: letters, digits and _./- only")
    f = f"{spool}.$$"
    return Cmd(f"( {cmd.line} ) >/dev/null 2>{f}; _rig_rc=$?; [ -s {f} ] && cat {f} >&2; "
               f"rm -f {f}; [ $_rig_rc -eq 0 ]", compound=True, op=";")


def capture(cmd: Cmd) -> Cmd:
    """$(cmd), for use as one word."""
    return Cmd(f'"$({cmd.line})"')


def with_sudo(cmd: Cmd) -> Cmd:
    """The line as root, never prompting for a password (sudo -n)."""
    return sh("sudo", "-H", "-n", "sh", "-c", cmd.line)


def fail(message: str) -> Cmd:
    """A command that stops this host with `message` on stderr (pyinfra reports it failed)."""
    return seq(Cmd(f"{sh('echo', 'rig: ' + message).line} >&2"), Cmd("exit 1"))


def decode_to(data: bytes, path: str, append: bool = False) -> Cmd:
    """data written to path through base64 on the command line (no SFTP round trips). Only for
    non-secret content: a command line can be logged."""
    encoded = base64.b64encode(data).decode()
    return to_file(pipe(sh("printf", "%s", encoded), sh("base64", "-d")), path, append)


def write_file(path: str, content: str, mode: str = "0644", dir_mode: str = "0755") -> Cmd:
    """Write content atomically in one round trip: folder, temp file, chmod, rename. `mv -T`
    (GNU): a path that is a directory fails the line, where plain mv would move the file into
    it and succeed with the path never written."""
    folder = path.rsplit("/", 1)[0] or "/"
    temp = f"{path}.rig-tmp"
    return all_of(sh("install", "-d", "-m", dir_mode, folder),
                  decode_to(content.encode(), temp),
                  sh("chmod", mode, temp),
                  sh("mv", "-T", temp, path))


def render(command: Cmd | str | list) -> str:
    """The shell line pyinfra runs: a Cmd, a plain string, or an argv list."""
    if isinstance(command, list):
        return sh(*command).line
    return str(command)
