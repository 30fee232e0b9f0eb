"""Real daemons for integration tests, started on 127.0.0.1 high ports with configs in a temp dir.

Each daemon is a module of fixtures (``tests.servers.nginx`` …); a test module loads it with
``pytest_plugins = ["tests.servers.nginx"]``. The helpers here are shared by them and the tests.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago: bound to port 0, then released.

    Nothing listens there afterwards, so it also serves as a "closed port"; a daemon that is
    to listen on it must retry with another port if someone took it in between.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]

