"""A real vsftpd on 127.0.0.1, with a real system user, for the FTP probe's tests.

Load it with ``pytest_plugins = ["tests.servers.vsftpd"]`` in a test module and ask for:

* ``vsftpd``: plain FTP, for the whole session;
* ``vsftpd_tls``: explicit FTPS (``AUTH TLS``), logins and data connections must use TLS; its
  certificate is issued by a test CA (``server.ca_file``) for ``127.0.0.1`` and ``localhost``;
* ``vsftpd_factory``: starts more servers inside one test (``tls="implicit"``, other options
  such as ``max_per_ip`` or ``local_max_rate``) and stops them at the test's end, or earlier
  with ``vsftpd_factory.stop(server)``;
* ``ftp_user``: the :class:`FtpUser` every server accepts.

Do not import this module at run time in a test module (pytest must be the first to import it,
to rewrite and register it); ``if TYPE_CHECKING: from tests.servers.vsftpd import Vsftpd`` is
fine.

vsftpd authenticates through PAM, so the user is a real system user: created with ``useradd``
and ``chpasswd`` under a unique name (``pcftp-<pid>-<hex>``) with a random password, removed with
``userdel`` at the end of the session (and, at the next session's start, if a killed run left
it behind). Its home is a fresh directory under /tmp (the user must be able to reach it, and
pytest's temp dirs are private to root); it is writable, for the upload test. Each server's
config, logs and secure-chroot dir live in a pytest temp dir; the control port and a passive
port range are free high ports on 127.0.0.1. vsftpd comes from the machine's packages
(``vsftpd`` on Debian); ``./dev test`` installs it. The tests must run as root (vsftpd's
standalone mode and ``useradd`` need it).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
PASV_RANGE = 50
USER_PREFIX = "pcftp-"
BANNER = "probecore test FTP"

BASE_OPTIONS = {
    "listen": "YES",
    "listen_ipv6": "NO",
    "background": "NO",
    "anonymous_enable": "NO",
    "local_enable": "YES",
    "write_enable": "YES",
    "local_umask": "022",
    "pam_service_name": "vsftpd",
    # Containers: no seccomp sandbox, no namespaces.
    "seccomp_sandbox": "NO",
    "isolate": "NO",
    "isolate_network": "NO",
    "pasv_enable": "YES",
    "pasv_address": HOST,
    "port_enable": "NO",
    "max_per_ip": "0",
    "max_clients": "0",
    "ftpd_banner": BANNER,
    "xferlog_enable": "YES",
    "xferlog_std_format": "NO",
    "dirmessage_enable": "NO",
    "use_localtime": "NO",
}


@dataclass(frozen=True)
class FtpUser:
    """The system user the test servers accept."""

    name: str
    password: str
    home: Path


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it issued for 127.0.0.1 and localhost."""

    ca_file: Path
    server_pem: Path  # private key + certificate chain, as vsftpd reads it


@dataclass(frozen=True)
class Vsftpd:
    """A running vsftpd: where it listens, in which TLS mode, and where its files are."""

    host: str
    port: int
    tls: str  # "none", "explicit" or "implicit"
    user: FtpUser
    directory: Path
    pid: int
    pasv_ports: tuple[int, int]
    ca_file: Path | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "ftps" if self.tls == "implicit" else "ftp"
        return f"{scheme}://{self.user.name}@{self.host}:{self.port}/"

    @property
    def log(self) -> Path:
        return self.directory / "vsftpd.log"

    def sessions(self) -> list[int]:
        """The pids of the session processes this server has forked and not yet reaped."""
        return [pid for pid in _descendants(self.pid) if _state(pid) not in ("Z", "")]

    def ports(self) -> set[int]:
        """The control port and every passive data port."""
        low, high = self.pasv_ports
        return {self.port, *range(low, high + 1)}


def vsftpd_binary() -> str:
    """The vsftpd executable, or a test failure that says how to get one."""
    found = daemon_binary("vsftpd", "vsftpd")
    if os.geteuid() != 0:
        pytest.fail("the vsftpd tests must run as root (vsftpd's standalone mode and useradd "
                    "need it)", pytrace=False)
    return found



# ---- the system user ------------------------------------------------------------------------

def _run_admin(*command: str) -> None:
    """Run useradd/chpasswd/userdel, retrying while another process holds /etc/passwd's lock."""
    for attempt in range(20):
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr.lower() or attempt == 19:
            break
        time.sleep(0.1)
    pytest.fail(f"{' '.join(command[:1])} failed (status {done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}", pytrace=False)


def _set_password(name: str, password: str) -> None:
    for attempt in range(20):
        done = subprocess.run(["chpasswd"], input=f"{name}:{password}\n", capture_output=True,
                              text=True, timeout=30)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr.lower() or attempt == 19:
            break
        time.sleep(0.1)
    pytest.fail(f"chpasswd failed (status {done.returncode}): {done.stderr.strip()}",
                pytrace=False)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) == uid:
                    found.append(int(entry))
                break
    return found


def _remove_user(name: str, home: Path | None) -> None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        # Sessions of this (unique, test-only) user that outlived their server: by pid.
        _kill(_processes_of(entry.pw_uid))
        _run_admin("userdel", "--force", name)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def _remove_stale_users() -> None:
    """Users a killed test run left behind: ``pcftp-<pid>-…`` whose pid no longer runs."""
    for entry in pwd.getpwall():
        if not entry.pw_name.startswith(USER_PREFIX):
            continue
        pid = entry.pw_name[len(USER_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            home = Path(entry.pw_dir)
            _remove_user(entry.pw_name, home if home.name.startswith("probecore-ftp-") else None)


def create_user() -> FtpUser:
    """A new system user with a random password and a writable home under /tmp."""
    vsftpd_binary()
    _remove_stale_users()
    name = f"{USER_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    password = "pc-" + secrets.token_urlsafe(12)
    home = Path(tempfile.mkdtemp(prefix="probecore-ftp-", dir="/tmp"))
    try:
        # -M: no skeleton files; /bin/sh is in /etc/shells, which PAM's pam_shells requires.
        _run_admin("useradd", "-M", "-d", str(home), "-s", "/bin/sh", name)
        _set_password(name, password)
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o755)
    except BaseException:
        _remove_user(name, home)
        raise
    return FtpUser(name, password, home)


# ---- certificates ---------------------------------------------------------------------------

def make_certificates(directory: Path) -> Certificates:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, server_pem = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return Certificates(ca_file, server_pem)


# ---- the daemon -----------------------------------------------------------------------------

def _config(directory: Path, port: int, pasv: tuple[int, int], tls: str,
            certs: Certificates | None, extra: dict[str, str]) -> dict[str, str]:
    options = dict(BASE_OPTIONS)
    options.update({
        "listen_address": HOST,
        "listen_port": str(port),
        "pasv_min_port": str(pasv[0]),
        "pasv_max_port": str(pasv[1]),
        "secure_chroot_dir": str(directory / "empty"),
        "vsftpd_log_file": str(directory / "vsftpd.log"),
    })
    if tls != "none":
        assert certs is not None
        options.update({
            "ssl_enable": "YES",
            "rsa_cert_file": str(certs.server_pem),
            "rsa_private_key_file": str(certs.server_pem),
            "ssl_ciphers": "HIGH",  # vsftpd's default (DES-CBC3-SHA) is refused by OpenSSL 3
            "force_local_logins_ssl": "YES",
            "force_local_data_ssl": "YES",
            "require_ssl_reuse": "YES",  # the default, stated: data connections resume the session
            "implicit_ssl": "YES" if tls == "implicit" else "NO",
        })
    options.update(extra)
    return options


def _ready(port: int, tls: str, certs: Certificates | None) -> bool:
    """Whether vsftpd answers on *port* with its banner (through TLS for implicit FTPS)."""
    answer = b""
    try:
        sock = socket.create_connection((HOST, port), timeout=1.0)
    except OSError:
        return False
    try:
        if tls == "implicit":
            assert certs is not None
            context = ssl.create_default_context(cafile=str(certs.ca_file))
            sock = context.wrap_socket(sock, server_hostname=HOST)
        while b"\n" not in answer and len(answer) < 1024:
            chunk = sock.recv(1024)
            if not chunk:
                break
            answer += chunk
        sock.sendall(b"QUIT\r\n")
    except (OSError, ssl.SSLError):
        return False
    finally:
        sock.close()
    return answer.startswith(b"220 ")


def _descendants(pid: int) -> list[int]:
    """Every process below *pid*, deepest first (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found[::-1]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the listener and every session process it forked.

    vsftpd's session processes call setsid(), so they are not in the listener's process group:
    they are found through /proc and killed by pid, deepest first, while the listener is still
    there to reap them (a session still reading a throttled upload would otherwise live on).
    """
    if proc.poll() is None:
        _kill(_descendants(proc.pid))
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def start_vsftpd(directory: Path, user: FtpUser, *, tls: str = "none",
                 certs: Certificates | None = None,
                 options: dict[str, str] | None = None) -> tuple[Vsftpd, subprocess.Popen[bytes]]:
    """Write a config into *directory* and start vsftpd on free ports; wait for its banner."""
    if tls not in ("none", "explicit", "implicit"):
        raise ValueError(f"tls must be none, explicit or implicit, not {tls!r}")
    binary = vsftpd_binary()
    (directory / "empty").mkdir(parents=True, exist_ok=True)
    extra = dict(options or {})
    problems = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        low = free_port()
        pasv = (low, min(low + PASV_RANGE - 1, 65535))
        config = _config(directory, port, pasv, tls, certs, extra)
        conf = directory / "vsftpd.conf"
        conf.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        output = directory / "output.log"
        (directory / "vsftpd.log").unlink(missing_ok=True)
        with open(output, "wb") as out:
            proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(port, tls, certs):
                server = Vsftpd(HOST, port, tls, user, directory, proc.pid, pasv,
                                certs.ca_file if certs else None, config)
                return server, proc
            time.sleep(0.01)
        status = (f"exited with status {proc.returncode}" if proc.poll() is not None
                  else f"did not send its banner within {START_TIMEOUT:g}s")
        _stop(proc)
        text = read_text(output)
        if "could not bind" in text:  # someone took the port meanwhile: try others
            problems.append(f"port {port} taken")
            continue
        pytest.fail(f"vsftpd ({binary}, {tls}) on {HOST}:{port} {status}.\n"
                    f"output ({output}):\n{text or '(empty)'}\n"
                    f"log ({directory / 'vsftpd.log'}):\n{read_text(directory / 'vsftpd.log') or '(empty)'}",
                    pytrace=False)
    pytest.fail(f"vsftpd could not get a free port after {PORT_ATTEMPTS} tries: {'; '.join(problems)}",
                pytrace=False)


class VsftpdFactory:
    """Starts extra servers for one test; every one is stopped when the test ends."""

    def __init__(self, tmp_path: Path, user: FtpUser, certs: Certificates):
        self._tmp_path = tmp_path
        self._user = user
        self._certs = certs
        self._running: dict[int, subprocess.Popen[bytes]] = {}

    def __call__(self, *, tls: str = "none", **options: str | int) -> Vsftpd:
        directory = self._tmp_path / f"vsftpd-{len(self._running) + 1}"
        directory.mkdir()
        server, proc = start_vsftpd(directory, self._user, tls=tls, certs=self._certs,
                                    options={k: str(v) for k, v in options.items()})
        self._running[server.pid] = proc
        return server

    def stop(self, server: Vsftpd) -> None:
        proc = self._running.pop(server.pid, None)
        if proc is not None:
            _stop(proc)

    def stop_all(self) -> None:
        for proc in self._running.values():
            _stop(proc)
        self._running.clear()


@pytest.fixture(scope="session")
def ftp_user() -> Iterator[FtpUser]:
    """A system user (unique name, random password) for the whole session, removed at its end."""
    user = create_user()
    try:
        yield user
    finally:
        _remove_user(user.name, user.home)


@pytest.fixture(scope="session")
def ftp_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("ftp-certs"))


@pytest.fixture(scope="session")
def vsftpd(tmp_path_factory: pytest.TempPathFactory, ftp_user: FtpUser) -> Iterator[Vsftpd]:
    """Plain FTP on ``127.0.0.1:<free port>`` for the whole session."""
    server, proc = start_vsftpd(tmp_path_factory.mktemp("vsftpd"), ftp_user)
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def vsftpd_tls(tmp_path_factory: pytest.TempPathFactory, ftp_user: FtpUser,
               ftp_certificates: Certificates) -> Iterator[Vsftpd]:
    """Explicit FTPS (AUTH TLS required for login and data) for the whole session."""
    server, proc = start_vsftpd(tmp_path_factory.mktemp("vsftpd-tls"), ftp_user, tls="explicit",
                                certs=ftp_certificates)
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def vsftpd_factory(tmp_path: Path, ftp_user: FtpUser,
                   ftp_certificates: Certificates) -> Iterator[VsftpdFactory]:
    """Start extra vsftpd servers in a test: ``vsftpd_factory(tls="implicit", max_per_ip=1)``."""
    factory = VsftpdFactory(tmp_path, ftp_user, ftp_certificates)
    try:
        yield factory
    finally:
        factory.stop_all()
