"""write_file run by sh: a target that is a directory fails the line (state.json made a
directory must not be reported written), an ordinary target is replaced."""

from __future__ import annotations

import subprocess

from rig.commands.base import write_file


def run(command) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", str(command)], capture_output=True, text=True, timeout=30)


def test_write_file_over_a_directory_fails(tmp_path):
    target = tmp_path / "state.json"
    target.mkdir()
    assert run(write_file(str(target), "{}\n")).returncode != 0
    assert target.is_dir() and list(target.iterdir()) == []


def test_write_file_replaces_a_file(tmp_path):
    target = tmp_path / "rig" / "state.json"
    assert run(write_file(str(target), "{}\n", "0600")).returncode == 0
    assert target.read_text() == "{}\n" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert run(write_file(str(target), "[]\n")).returncode == 0
    assert target.read_text() == "[]\n"
