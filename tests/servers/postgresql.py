"""A real PostgreSQL on 127.0.0.1, for tests of the ``postgresql:`` store and what is built on it.

Fixtures (load them with ``pytest_plugins = ["tests.servers.postgresql"]``; tests/conftest.py
already does, so every test module can ask for them):

``postgresql_server`` (session)
    A :class:`PostgreSQLServer`: one cluster made with ``initdb`` and run with ``pg_ctl`` from the
    newest ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package; no system
    service is used). It listens on a free 127.0.0.1 high port and on a unix socket in its own
    temp dir, and is stopped (``pg_ctl stop -m immediate``) and removed at the end of the session,
    also when tests failed. Two roles exist:

    - :attr:`~PostgreSQLServer.user` (``probecore``): superuser, ``trust`` auth (no password);
      :attr:`~PostgreSQLServer.url` connects as it to the ``postgres`` database.
    - :attr:`~PostgreSQLServer.password_user` (``probecore_pw``): login + CREATEDB, must give
      :attr:`~PostgreSQLServer.password` (``scram-sha-256`` over TCP). It exists to show that a
      password in a store URL is used but never printed or logged.

    :meth:`~PostgreSQLServer.create_database` makes a fresh, empty database (``CREATE DATABASE
    … TEMPLATE template0``) and returns its ``postgresql://`` URL, so tests never see each
    other's tables; :meth:`~PostgreSQLServer.database_url` spells the URL of a database for
    either role (with or without the password); :meth:`~PostgreSQLServer.execute` runs admin SQL.

``postgresql_url`` (function)
    The URL of a fresh database made for this one test (owned by the trust user).

The cluster runs with ``fsync=off`` and ``synchronous_commit=off``: a test that kills a *client*
still sees everything the server acknowledged (the server is not killed), and the suite does not
wait for disk flushes. :func:`start_postgresql` takes ``durable=True`` for a cluster with the
defaults (benchmarks/scale.py uses that to measure honest write rates).

PostgreSQL refuses to run as root. Run as root, the cluster belongs to an unprivileged user
(``probecore-test``, created with ``useradd`` if absent; ``nobody`` if that fails) and
``initdb``/``pg_ctl`` run as that user; run as anyone else, as the current user.

If the binaries are missing the tests fail (they do not skip) with a message saying how to get
them (``./dev test`` installs the package). :func:`start_postgresql` is usable without pytest
(it raises :class:`PostgreSQLStartError`); the fixtures turn that into a test failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.servers import HOST, free_port, read_text

PG_ROOT = Path("/usr/lib/postgresql")
TEST_OS_USER = "probecore-test"
SUPERUSER = "probecore"
PASSWORD_USER = "probecore_pw"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
PORT_ATTEMPTS = 5

HBA = """\
# Written by tests/servers/postgresql.py. The password user must always give its password.
local   all   {password_user}                 scram-sha-256
host    all   {password_user}   127.0.0.1/32  scram-sha-256
local   all   all                             trust
host    all   all               127.0.0.1/32  trust
"""


class PostgreSQLStartError(RuntimeError):
    """The cluster could not be made or started (the message says why, with the server's log)."""


def postgresql_bin() -> Path:
    """The ``bin`` directory of the newest PostgreSQL under /usr/lib/postgresql."""
    versions = []
    if PG_ROOT.is_dir():
        for entry in PG_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", entry.name) and (entry / "bin" / "initdb").exists():
                versions.append((tuple(int(p) for p in entry.name.split(".")), entry / "bin"))
    if not versions:
        raise PostgreSQLStartError(
            f"PostgreSQL is not installed (no {PG_ROOT}/<version>/bin/initdb); run the tests with "
            "'./dev test', which installs it (or: apt-get install postgresql)")
    return max(versions)[1]


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged user the cluster runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(TEST_OS_USER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", TEST_OS_USER],
                          check=False, capture_output=True, stdin=subprocess.DEVNULL)
    try:
        return pwd.getpwnam(TEST_OS_USER)
    except KeyError:
        if made.returncode not in (0, 9):  # 9: exists (created concurrently)
            return pwd.getpwnam("nobody")
        raise


@dataclass
class PostgreSQLServer:
    """A running PostgreSQL cluster on loopback (see the module docstring)."""

    directory: Path
    bin: Path
    host: str
    port: int
    password: str = field(repr=False)
    run_as: pwd.struct_passwd | None = field(default=None, repr=False)
    keep: bool = False
    """Leave the cluster's directory on :meth:`stop` (to start it again later)."""
    user: str = SUPERUSER
    password_user: str = PASSWORD_USER
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket ``.s.PGSQL.<port>`` is."""
        return self.directory / "run"

    @property
    def log(self) -> Path:
        return self.directory / "postgresql.log"

    @property
    def url(self) -> str:
        """``postgresql://probecore@127.0.0.1:<port>/postgres`` (trust: no password)."""
        return self.database_url("postgres")

    def database_url(self, database: str, *, password_user: bool = False,
                     with_password: bool = True) -> str:
        """The URL of *database*, as the trust user or (``password_user=True``) as the password
        user, with its password in the URL unless ``with_password=False``."""
        if password_user:
            cred = quote(self.password_user, safe="")
            if with_password:
                cred += ":" + quote(self.password, safe="")
        else:
            cred = quote(self.user, safe="")
        return f"postgresql://{cred}@{self.host}:{self.port}/{quote(database, safe='')}"

    def execute(self, sql: str, params: tuple | None = None, *, database: str = "postgres") -> list[tuple]:
        """Run one SQL statement as the superuser in autocommit mode; the rows it returned."""
        import psycopg  # the store's own driver; imported here so the module loads without it

        with psycopg.connect(self.database_url(database), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None, *, owner: str | None = None) -> str:
        """Create an empty database (``TEMPLATE template0``) and return its URL for the trust
        user. *name* defaults to a fresh unique one; *owner* (e.g. :attr:`password_user`) owns
        it and so may create tables in its ``public`` schema."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        owner_sql = f' OWNER "{owner}"' if owner else ""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'{owner_sql}')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop *name*, ending its open connections first."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, args: list[str], *, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        extra: dict = {}
        if self.run_as is not None:
            extra = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
               "HOME": str(self.directory), "TZ": "UTC"}
        proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, cwd=self.directory, **extra)
        if check and proc.returncode != 0:
            raise PostgreSQLStartError(
                f"{Path(args[0]).name} {' '.join(args[1:3])} … failed ({proc.returncode}): "
                f"{(proc.stdout + proc.stderr).strip()}\nlog ({self.log}):\n{read_text(self.log) or '(empty)'}")
        return proc

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``) and remove its directory
        (unless :attr:`keep`: then it stops with ``-m fast``, a clean shutdown)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast" if self.keep else "immediate",
                           "-w", "-t", str(int(STOP_TIMEOUT)), "stop"], timeout=STOP_TIMEOUT + 5, check=False)
        finally:
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)


def start_postgresql(*, durable: bool = False, keep_dir: Path | None = None,
                     settings: dict[str, str] | None = None) -> PostgreSQLServer:
    """Make a cluster in a new temp dir, start it on a free port, create the roles.

    ``durable=False`` turns fsync and synchronous commit off (see the module docstring).
    *keep_dir*: the cluster lives there and is kept on :meth:`~PostgreSQLServer.stop`; a cluster
    made there before is started again with its data (benchmarks reuse generated data this way).
    *settings* are extra ``postgresql.conf`` lines (``{"max_wal_size": "'4GB'"}``). Raises
    :class:`PostgreSQLStartError` with the server's log when anything fails.
    """
    import psycopg

    bin_dir = postgresql_bin()
    run_as = _os_user()
    directory = keep_dir or Path(tempfile.mkdtemp(prefix="probecore-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    # Only the cluster's user may read it (initdb insists); we, root, can read anything anyway.
    directory.chmod(0o700)
    server = PostgreSQLServer(directory, bin_dir, HOST, 0, secrets.token_urlsafe(18), run_as,
                              keep=keep_dir is not None)
    reused = (server.data_dir / "PG_VERSION").exists()
    try:
        (directory / "run").mkdir(exist_ok=True)
        if run_as is not None:
            for path in (directory, directory / "run"):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        if not reused:
            server._run([str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SUPERUSER,
                         "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                        timeout=120)
        (server.data_dir / "pg_hba.conf").write_text(HBA.format(password_user=PASSWORD_USER))
        config = {
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{server.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "password_encryption": "'scram-sha-256'",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %u@%d '",
            "timezone": "'UTC'",
        }
        if not durable:
            config |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        config |= settings or {}
        if run_as is not None:
            os.chown(server.data_dir / "pg_hba.conf", run_as.pw_uid, run_as.pw_gid)
        problems = []
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            with open(server.data_dir / "postgresql.auto.conf", "w") as conf:
                conf.write("".join(f"{k} = {v}\n" for k, v in config.items()) + f"port = {port}\n")
            if run_as is not None:
                os.chown(server.data_dir / "postgresql.auto.conf", run_as.pw_uid, run_as.pw_gid)
            started = server._run([str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log),
                                   "-w", "-t", str(int(START_TIMEOUT)), "start"],
                                  timeout=START_TIMEOUT + 10, check=False)
            if started.returncode == 0:
                server.port = port
                break
            log = read_text(server.log)
            if "already in use" in log:
                problems.append(f"port {port} taken")
                continue
            raise PostgreSQLStartError(
                f"pg_ctl start on {HOST}:{port} failed ({started.returncode}): "
                f"{(started.stdout + started.stderr).strip()}\nlog ({server.log}):\n{log or '(empty)'}")
        else:
            raise PostgreSQLStartError(f"PostgreSQL could not get a free port after {PORT_ATTEMPTS} tries: "
                                       f"{'; '.join(problems)}")
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # pg_ctl -w waited for the socket; make sure TCP answers as well
            try:
                server.execute("SELECT 1")
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgreSQLStartError(f"PostgreSQL on {HOST}:{server.port} does not answer: {exc}\n"
                                               f"log:\n{read_text(server.log)}") from None
                time.sleep(0.05)
        # A utility statement takes no bind parameters; token_urlsafe has no quote to escape.
        verb = "ALTER" if reused else "CREATE"
        server.execute(f"{verb} ROLE \"{PASSWORD_USER}\" LOGIN CREATEDB PASSWORD '{server.password}'")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQLServer]:
    """One real PostgreSQL for the session (see the module docstring); stopped at its end."""
    try:
        server = start_postgresql()
    except PostgreSQLStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgresql_url(postgresql_server: PostgreSQLServer) -> Iterator[str]:
    """The URL of a fresh empty database for this test (dropped afterwards)."""
    import psycopg

    url = postgresql_server.create_database()
    try:
        yield url
    finally:
        # A test that left the server unusable has failed on its own already.
        with contextlib.suppress(psycopg.Error):
            postgresql_server.drop_database(url.rsplit("/", 1)[1])
