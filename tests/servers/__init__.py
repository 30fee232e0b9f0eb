"""Real daemons for integration tests, started on 127.0.0.1 high ports with configs in a temp dir.

Each daemon is a module of fixtures (``tests.servers.nginx`` …); a test module loads it with
``pytest_plugins = ["tests.servers.nginx"]``. The helpers here are shared by them and the tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

HOST = "127.0.0.1"


def daemon_binary(name: str, package: str) -> str:
    """The executable *name* (looked up in PATH and the sbin directories), or a test failure
    that says how to get it: the suite's real daemons come from ``./dev test``."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/sbin/{name}")
         if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{name} is not installed; run the tests with './dev test', which installs it "
                    f"(or: apt-get install {package})", pytrace=False)
    return found


def read_text(path: Path) -> str:
    """A daemon's log or pid file, stripped; empty if it is not there (yet)."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago: bound to port 0, then released.

    Nothing listens there afterwards, so it also serves as a "closed port"; a daemon that is
    to listen on it must retry with another port if someone took it in between.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]



def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, wait up to *timeout*, then SIGKILL and wait: a daemon never outlives its test."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
