"""A real postfix + dovecot pair on 127.0.0.1 high ports, for the mail probe's tests.

Load it with ``pytest_plugins = ["tests.servers.mail"]`` and ask for ``mail_server`` (one for the
whole session; a :class:`MailServer`). Layout (everything in a pytest temp dir, every port a free
high port on 127.0.0.1):

* postfix submission listeners, all with SASL AUTH PLAIN/LOGIN through dovecot's auth service:
  ``smtp_port`` (plain, no TLS), ``starttls_port`` (STARTTLS required before AUTH),
  ``smtps_port`` (implicit TLS), and ``hygiene_port`` (plain, but its cleanup service runs the
  hygiene ``body_checks``/``mime_header_checks`` that reject EICAR and GTUBE: submitting to it is
  "the body check switched on", to ``smtp_port`` "switched off"; a static switch, so no
  ``postfix reload`` races the tests);
* delivery: postfix LMTP to dovecot; dovecot LMTP runs a global sieve script (``sieve_before``)
  that files mail for ``junk@probe.test`` into ``Junk``;
* reading: dovecot IMAP (``imap_port``, STARTTLS offered; ``imaps_port`` implicit TLS) and POP3
  (``pop3_port``), users from a passwd-file, Maildir under the temp dir.

Recipient rules in postfix (a static ``texthash`` table): mail for ``held*@probe.test`` is put on
hold (``release_held()`` releases and flushes it: "deferred N seconds"), mail for
``blocked@probe.test`` is rejected at RCPT (postfix answers 554 5.1.1). Outbound mail is shut off (error transports,
relay restriction). Controls: ``postfix_stopped()`` / ``dovecot_stopped()`` context managers stop
a daemon and start it again (bounded waits). ``logs()`` gives both daemons' logs for failure
messages. The certificate (for 127.0.0.1 and localhost) is issued by a test CA (``ca_file``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import HOST, daemon_binary, free_port, read_text

DOMAIN = "probe.test"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
USERS = (["alice", "bob", "carol", "junk", "held", "held2", "blocked"]
         + [f"s{i}" for i in range(10)] + [f"r{i}" for i in range(10)]
         + [f"n{i}" for i in range(4)])
"""n0-n3 receive the email channel's notices (tests/test_notify_email.py): mail still on its way
there must not land in a mailbox a probe test expects empty."""
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR_BASE64_PREFIX = "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJE"


@dataclass
class MailServer:
    directory: Path
    password: str
    ca_file: Path
    ports: dict[str, int]
    postfix: str
    dovecot: str
    _dovecot_conf: Path = field(repr=False, default=Path())
    _postfix_proc: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    host: str = HOST
    domain: str = DOMAIN

    def __getattr__(self, name: str) -> int:
        if name.endswith("_port") and name[:-5] in self.__dict__.get("ports", {}):
            return self.ports[name[:-5]]
        raise AttributeError(name)

    def address(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    @property
    def postfix_dir(self) -> Path:
        return self.directory / "pf"

    @property
    def maildir_root(self) -> Path:
        return self.directory / "vmail"

    # ---- logs --------------------------------------------------------------------------------

    def logs(self) -> str:
        return (f"postfix log ({self.postfix_dir / 'postfix.log'}):\n"
                f"{_tail(read_text(self.postfix_dir / 'postfix.log'))}\n"
                f"dovecot log ({self.directory / 'dc' / 'dovecot.log'}):\n"
                f"{_tail(read_text(self.directory / 'dc' / 'dovecot.log'))}")

    # ---- postfix -----------------------------------------------------------------------------

    def _postfix_cmd(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run([self.postfix, "-c", str(self.postfix_dir / "etc"), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            pytest.fail(f"postfix {' '.join(args)} failed ({done.returncode}): "
                        f"{done.stderr.strip() or done.stdout.strip()}\n{self.logs()}", pytrace=False)
        return done.stdout

    def start_postfix(self) -> None:
        log = open(self.postfix_dir / "postfix.log", "ab")
        with log:
            self._postfix_proc = subprocess.Popen(
                [self.postfix, "-c", str(self.postfix_dir / "etc"), "start-fg"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait_until(lambda: all(_answers(self.ports[p]) for p in
                                ("smtp", "starttls", "hygiene", "smtps")),
                    self._postfix_proc, "postfix", self)

    def stop_postfix(self) -> None:
        proc = self._postfix_proc
        if proc is None:
            return
        if proc.poll() is None:
            self._postfix_cmd("stop", check=False)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(STOP_TIMEOUT)
        self._postfix_proc = None
        _wait_until(lambda: not any(_answers(self.ports[p]) for p in ("smtp", "starttls")),
                    None, "postfix to stop", self)

    @contextmanager
    def postfix_stopped(self) -> Iterator[None]:
        self.stop_postfix()
        try:
            yield
        finally:
            self.start_postfix()

    def release_held(self) -> None:
        """Release every message on hold and deliver the queue now."""
        etc = str(self.postfix_dir / "etc")
        for command in (["postsuper", "-c", etc, "-H", "ALL"], ["postqueue", "-c", etc, "-f"]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)}: {done.stderr.strip()}\n{self.logs()}",
                            pytrace=False)

    def held_count(self) -> int:
        return sum(1 for p in (self.postfix_dir / "spool" / "hold").rglob("*") if p.is_file())

    # ---- dovecot -----------------------------------------------------------------------------

    def _dovecot_pid(self) -> int | None:
        text = read_text(self.directory / "dc" / "run" / "master.pid")
        return int(text) if text.isdigit() else None

    def start_dovecot(self) -> None:
        # dovecot daemonizes; its children would keep a captured stdout open, so: a file.
        output = self.directory / "dc" / "start.log"
        with open(output, "ab") as out:
            done = subprocess.run([self.dovecot, "-c", str(self._dovecot_conf)], stdout=out,
                                  stderr=subprocess.STDOUT, timeout=30, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            pytest.fail(f"dovecot failed to start ({done.returncode}): {read_text(output)}\n"
                        f"{self.logs()}", pytrace=False)
        _wait_until(lambda: all(_answers(self.ports[p]) for p in ("imap", "pop3", "lmtp", "auth")),
                    None, "dovecot", self)

    def stop_dovecot(self) -> None:
        pid = self._dovecot_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: not any(_answers(self.ports[p]) for p in ("imap", "pop3")),
                    None, "dovecot to stop", self)

    @contextmanager
    def dovecot_stopped(self) -> Iterator[None]:
        self.stop_dovecot()
        try:
            yield
        finally:
            self.start_dovecot()

    # ---- mailboxes ---------------------------------------------------------------------------

    def mailbox_files(self, user: str, folder: str = "INBOX") -> list[Path]:
        base = self.maildir_root / self.address(user)
        if folder != "INBOX":
            base = base / f".{folder}"
        return [p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file()]

    def clear(self, user: str) -> None:
        """Remove every message of *user* (all folders), for a clean start."""
        base = self.maildir_root / self.address(user)
        for path in base.rglob("*"):
            if path.is_file() and path.parent.name in ("new", "cur", "tmp"):
                path.unlink(missing_ok=True)

    def stop(self) -> None:
        self.stop_postfix()
        self.stop_dovecot()


def _tail(text: str, lines: int = 150) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_until(predicate, proc, what: str, server: MailServer) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    status = (f"exited with status {proc.returncode}" if proc is not None and proc.poll() is not None
              else f"not ready within {START_TIMEOUT:g}s")
    pytest.fail(f"{what}: {status}\n{server.logs()}", pytrace=False)


# ---- configuration ------------------------------------------------------------------------------

def _dovecot_conf(m: Path, ports: dict[str, int], cert: Path, key: Path) -> str:
    return f"""\
base_dir = {m}/dc/run
state_dir = {m}/dc/state
log_path = {m}/dc/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{m}/vmail/%u
first_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {m}/dc/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={m}/vmail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports['imap']}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports['imaps']}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {ports['pop3']}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports['lmtp']}
  }}
}}
service anvil {{
  # No auth penalty (up to 15 s per failed login from 127.0.0.1, shared by every test)
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  inet_listener auth-postfix {{
    address = 127.0.0.1
    port = {ports['auth']}
  }}
}}
protocol lmtp {{
  auth_username_format = %u
  mail_plugins = $mail_plugins sieve
}}
pop3_uidl_format = %08Xu%08Xv
plugin {{
  sieve_before = {m}/sieve/before.sieve
  sieve = file:{m}/sieve/user;active={m}/sieve/user/active.sieve
}}
"""


SIEVE = """\
require ["fileinto", "mailbox"];
if address :is "to" "junk@probe.test" {
  fileinto :create "Junk";
  stop;
}
"""


def _main_cf(m: Path, ports: dict[str, int], cert: Path, key: Path) -> str:
    error = "error:5.7.1 outbound delivery disabled in test"
    return f"""\
compatibility_level = 3.6
queue_directory = {m}/pf/spool
data_directory = {m}/pf/data
maillog_file = /dev/stdout
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.probe.test
mydomain = probe.test
myorigin = probe.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtputf8_enable = no
virtual_mailbox_domains = probe.test
virtual_transport = lmtp:inet:127.0.0.1:{ports['lmtp']}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{ports['auth']}
smtpd_tls_security_level = none
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{m}/pf/etc/recipient_access
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
default_transport = {error}
relay_transport = {error}
smtp_dns_support_level = disabled
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
lmtp_connection_cache_on_demand = no
# An idle smtpd whose dovecot auth went away (dovecot_stopped) exits with status 1; by default
# the master then stops that listener for 60 s ("bad command startup -- throttling").
service_throttle_time = 1s
"""


def _master_cf(ports: dict[str, int], m: Path) -> str:
    lines = [
        f"127.0.0.1:{ports['smtp']} inet n - n - - smtpd",
        f"127.0.0.1:{ports['starttls']} inet n - n - - smtpd -o smtpd_tls_security_level=encrypt"
        " -o smtpd_tls_auth_only=yes",
        f"127.0.0.1:{ports['smtps']} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"
        " -o smtpd_tls_security_level=encrypt",
        f"127.0.0.1:{ports['hygiene']} inet n - n - - smtpd -o cleanup_service_name=cleanhyg",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        f"cleanhyg unix n - n - 0 cleanup -o body_checks=regexp:{m}/pf/etc/body_checks"
        f" -o mime_header_checks=regexp:{m}/pf/etc/mime_header_checks",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return "".join("\\" + c if not c.isalnum() else c for c in text)


def start_mail_server(directory: Path) -> MailServer:
    """Write the configs into *directory*, start dovecot then postfix, wait until both answer."""
    postfix = daemon_binary("postfix", "postfix")
    dovecot = daemon_binary("dovecot", "dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve")
    sievec = daemon_binary("sievec", "dovecot-sieve")
    if os.geteuid() != 0:
        pytest.fail("the mail tests must run as root (the postfix master needs it)", pytrace=False)
    import trustme

    m = directory
    ports = {name: free_port() for name in
             ("smtp", "starttls", "smtps", "hygiene", "lmtp", "auth", "imap", "imaps", "pop3")}
    password = "pc-" + secrets.token_urlsafe(12)
    for sub in ("dc/run", "dc/state", "vmail", "sieve/user", "pf/etc", "pf/spool", "pf/data",
                "certs"):
        (m / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(m, 0o755)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = m / "certs/ca.pem", m / "certs/cert.pem", m / "certs/key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    os.chmod(key_file, 0o600)

    conf = m / "dc/dovecot.conf"
    conf.write_text(_dovecot_conf(m, ports, cert_file, key_file))
    (m / "dc/users").write_text("".join(f"{u}@{DOMAIN}:{{PLAIN}}{password}\n" for u in USERS))
    (m / "sieve/before.sieve").write_text(SIEVE)
    shutil.chown(m / "vmail", "nobody", "nogroup")
    done = subprocess.run([sievec, str(m / "sieve/before.sieve")], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        pytest.fail(f"sievec failed: {done.stderr}", pytrace=False)

    etc = m / "pf/etc"
    (etc / "main.cf").write_text(_main_cf(m, ports, cert_file, key_file))
    (etc / "master.cf").write_text(_master_cf(ports, m))
    (etc / "recipient_access").write_text(
        f"held@{DOMAIN} HOLD\nheld2@{DOMAIN} HOLD\n"
        f"blocked@{DOMAIN} REJECT 5.1.1 mailbox unavailable (test rule)\n")
    (etc / "body_checks").write_text(
        f"/{_escape(EICAR[:40])}/ REJECT 5.7.1 virus found: EICAR test file\n"
        f"/{EICAR_BASE64_PREFIX}/ REJECT 5.7.1 virus found: EICAR test file (base64)\n"
        f"/{_escape(GTUBE[:40])}/ REJECT 5.7.1 spam: GTUBE test message\n")
    (etc / "mime_header_checks").write_text(
        '/^Content-(Type|Disposition):.*name="?eicar/ REJECT 5.7.1 virus found: EICAR archive\n')
    shutil.chown(m / "pf/data", "postfix")

    server = MailServer(m, password, ca_file, ports, postfix, dovecot, conf)
    done = subprocess.run([postfix, "-c", str(etc), "check"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"postfix check failed: {done.stderr or done.stdout}", pytrace=False)
    try:
        server.start_dovecot()
        server.start_postfix()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    """postfix + dovecot for the whole session (see the module docstring)."""
    # Not a pytest temp dir: those are private to root, and postfix's and dovecot's workers
    # (postfix, nobody) must reach the queue and the mailboxes.
    directory = Path(tempfile.mkdtemp(prefix="probecore-mail-", dir="/tmp"))
    try:
        server = start_mail_server(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
