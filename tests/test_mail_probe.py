"""The ``mail`` probe kind against a real postfix + dovecot (tests/servers/mail.py), through the
real scheduler and runner.

One mail system for the whole module (about 2.5 s to start); tests that need their own mailbox
state use their own users. Real sockets, so real time: no MockClock.
"""

from __future__ import annotations

import email.utils
import imaplib
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from probecore import ProfileError, SLIRecord, encode_record, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from tests.conftest import assert_valid_records

if TYPE_CHECKING:
    from tests.servers.mail import MailServer

pytest_plugins = ["tests.servers.mail"]

PASSWORD_ENV = "PROBECORE_TEST_MAIL_PASSWORD"
WRONG_ENV = "PROBECORE_TEST_MAIL_WRONG"
WRONG_PASSWORD = "wrong-Mq8-distinctive-passphrase"
TOKEN_HEADER = "X-Probecore-Token"

HEAD = """\
[profile]
name = "mail-test"

[defaults]
interval = "1m"
timeout = "20s"
confirm = 1
"""


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch, mail_server: MailServer) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mail_server.password)
    monkeypatch.setenv(WRONG_ENV, WRONG_PASSWORD)


async def run_once(tmp_path: Path, checks: str) -> tuple[dict[str, SLIRecord], list[SLIRecord]]:
    """Run *checks* once; the checks' records by id, and every stored record (members too)."""
    host = make_host()
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store,
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    rounds = {r.check.split("/", 1)[1]: r for r in result.records if ":" not in r.check}
    assert len(rounds) == len(profile.checks)
    return rounds, list(store.records())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value.startswith(("{", "[")):
        return value
    return f'"{value}"'


def check_table(check_id: str, server: MailServer, sender: str = "alice", recipient: str = "bob",
                *, sender_env: str = PASSWORD_ENV, recipient_env: str = PASSWORD_ENV,
                **keys: object) -> str:
    """A ``[[check]]`` table: plain SMTP and IMAP on the test server unless *keys* say otherwise."""
    table: dict[str, object] = {
        "smtp_host": server.host, "smtp_port": server.smtp_port, "smtp_tls": "none",
        "receive_port": server.imap_port, "receive_tls": "none",
        "sender": server.address(sender), "recipient": server.address(recipient),
        "sender_password": f'{{ env = "{sender_env}" }}',
        "recipient_password": f'{{ env = "{recipient_env}" }}',
        "deliver_within": "10s",
    }
    table.update(keys)
    lines = ["[[check]]", f'id = "{check_id}"', 'probe = "mail"']
    lines += [f"{k} = {_toml(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n\n"


def assert_no_secret(record: SLIRecord, *secrets: str) -> None:
    encoded = encode_record(record).decode()
    for secret in secrets:
        assert secret not in encoded, f"password leaked into {record.check}: {encoded}"


def established_to(ports: set[int]) -> list[str]:
    """This process's open TCP sockets (a file descriptor, in any state: ESTABLISHED, CLOSE_WAIT
    after an abort …) whose remote port is one of *ports*."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A" and fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) in ports:
            found.append(f"{fields[1]} -> {fields[2]}")
    return found


def client_ports(server: MailServer) -> set[int]:
    return {server.ports[p] for p in ("smtp", "starttls", "smtps", "hygiene", "imap", "imaps", "pop3")}


def assert_clean(server: MailServer, *users: str) -> None:
    for user in users:
        for folder in ("INBOX", "Junk"):
            assert server.mailbox_files(user, folder) == [], f"{user}/{folder} not cleaned up"
    assert established_to(client_ports(server)) == []


def imap(server: MailServer, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
    client.login(server.address(user), server.password)
    return client


def append(client: imaplib.IMAP4, folder: str, subject: str, token: str | None) -> None:
    headers = [f"From: someone@{'probe.test'}", "To: bob@probe.test", f"Subject: {subject}",
               f"Date: {email.utils.formatdate()}"]
    if token is not None:
        headers.append(f"{TOKEN_HEADER}: {token}")
    message = ("\r\n".join(headers) + "\r\n\r\nbody\r\n").encode()
    typ, data = client.append(folder, None, None, message)
    assert typ == "OK", data


# ---- round trips ------------------------------------------------------------------------------

async def test_round_trip_over_imap_with_idle(tmp_path: Path, mail_server: MailServer) -> None:
    mail_server.clear("bob")
    records, _ = await run_once(tmp_path, check_table("rt", mail_server))
    record = records["rt"]
    assert record.outcome == "ok", (record.failure, mail_server.logs())
    assert list(record.phases) == ["prepare", "submit", "delivery", "cleanup", "send_delay",
                                   "receive_delay"]
    assert record.value == pytest.approx(record.phases["submit"] + record.phases["delivery"])
    assert 0 < record.value < 5 and record.unit == "s"
    assert record.phases["send_delay"] <= 1.0 and record.phases["receive_delay"] <= 1.5
    details = record.details
    assert details["smtp_reply"] == 250 and details["smtp_banner_reply"] == 220
    assert details["imap_idle"] is True
    assert details["folder"] == "INBOX" and details["received_hops"] == 2
    assert details["swept"] == 0 and details["receive"] == "imap"
    assert record.target == (f"alice@probe.test -> bob@probe.test via smtp://127.0.0.1:"
                             f"{mail_server.smtp_port}, imap://127.0.0.1:{mail_server.imap_port}")
    assert_no_secret(record, mail_server.password)
    assert_clean(mail_server, "bob")


async def test_round_trip_over_pop3_and_imap_polling(tmp_path: Path, mail_server: MailServer) -> None:
    mail_server.clear("carol")
    mail_server.clear("r0")
    records, _ = await run_once(
        tmp_path, check_table("pop", mail_server, "alice", "carol", receive="pop3",
                              receive_port=mail_server.pop3_port)
        + check_table("poll", mail_server, "alice", "r0", idle=False, poll_max="200ms"))
    pop, poll = records["pop"], records["poll"]
    for record in (pop, poll):
        assert record.outcome == "ok", (record.failure, mail_server.logs())
        assert record.details["folder"] == "INBOX" and record.details["received_hops"] == 2
        assert 0 < record.value < 5
    assert pop.details["receive"] == "pop3" and "imap_idle" not in pop.details
    assert poll.details["imap_idle"] is False
    assert_clean(mail_server, "carol", "r0")


async def test_tls_submission_and_reading(tmp_path: Path, mail_server: MailServer) -> None:
    ca = str(mail_server.ca_file)
    records, _ = await run_once(
        tmp_path,
        check_table("starttls", mail_server, "alice", "r1", smtp_port=mail_server.starttls_port,
                    smtp_tls="starttls", receive_tls="starttls", ca_file=ca)
        + check_table("implicit", mail_server, "alice", "r2", smtp_port=mail_server.smtps_port,
                      smtp_tls="implicit", receive_port=mail_server.imaps_port,
                      receive_tls="implicit", ca_file=ca)
        + check_table("untrusted", mail_server, "alice", "r3", smtp_port=mail_server.starttls_port,
                      smtp_tls="starttls")
        + check_table("plain-to-tls-only", mail_server, "alice", "r3",
                      smtp_port=mail_server.starttls_port))
    for name in ("starttls", "implicit"):
        record = records[name]
        assert record.outcome == "ok", (name, record.failure and record.failure.message, mail_server.logs())
        assert record.details["smtp_tls_version"].startswith("TLSv1.")
    untrusted = records["untrusted"]  # verification is on by default
    assert untrusted.outcome == "fail" and untrusted.failure is not None
    assert (untrusted.failure.code, untrusted.failure.attribution) == ("smtp_connect", "provider")
    assert "certificate verify failed" in untrusted.failure.message
    plain = records["plain-to-tls-only"]  # postfix: AUTH only after STARTTLS
    assert plain.outcome == "fail" and plain.failure is not None
    assert (plain.failure.code, plain.failure.attribution) == ("smtp_auth", "customer")
    assert_clean(mail_server, "r1", "r2", "r3")


async def test_wrong_passwords_are_the_customers(tmp_path: Path, mail_server: MailServer) -> None:
    records, _ = await run_once(
        tmp_path, check_table("smtp", mail_server, "alice", "r4", sender_env=WRONG_ENV)
        + check_table("imap", mail_server, "alice", "r4", recipient_env=WRONG_ENV)
        + check_table("pop3", mail_server, "alice", "r4", recipient_env=WRONG_ENV, receive="pop3",
                      receive_port=mail_server.pop3_port))
    expected = {"smtp": ("smtp_auth", "SMTP AUTH refused: 535"),
                "imap": ("imap_auth", "IMAP login refused: [AUTHENTICATIONFAILED]"),
                "pop3": ("pop3_auth", "POP3 login refused: -ERR [AUTH]")}
    for name, (code, message) in expected.items():
        record = records[name]
        assert record.outcome == "fail", name
        assert record.failure is not None
        assert (record.failure.code, record.failure.attribution) == (code, "customer")
        assert record.failure.message.startswith(message), record.failure.message
        assert record.value is None
        assert_no_secret(record, WRONG_PASSWORD, mail_server.password)
    assert records["smtp"].details["smtp_reply"] == 535
    assert list(records["imap"].phases) == ["prepare"]  # nothing is sent to a mailbox one cannot read
    assert_clean(mail_server, "r4")


async def test_a_wrong_smtp_password_is_tried_once_per_attempt(tmp_path: Path, mail_server: MailServer) -> None:
    """postfix offers PLAIN and LOGIN; smtplib's login() tried both, so every attempt counted
    twice towards the account's lockout. One AUTH per attempt: one failure in postfix's log."""
    log = mail_server.postfix_dir / "postfix.log"
    start = log.stat().st_size

    def failures() -> list[str]:
        with open(log, "rb") as f:
            f.seek(start)
            return [line for line in f.read().decode(errors="replace").splitlines()
                    if "SASL" in line and "authentication failed" in line]

    records, _ = await run_once(tmp_path, check_table("smtp", mail_server, "alice", "r4", sender_env=WRONG_ENV))
    assert records["smtp"].failure is not None and records["smtp"].failure.code == "smtp_auth"
    with trio.move_on_after(5):
        while not failures():
            await trio.sleep(0.05)
    await trio.sleep(0.5)  # a second failure would be logged by now
    assert len(failures()) == 1, failures()
    assert_clean(mail_server, "r4")


async def test_postfix_stopped_is_smtp_connect(tmp_path: Path, mail_server: MailServer) -> None:
    with mail_server.postfix_stopped():
        records, _ = await run_once(tmp_path, check_table("down", mail_server, "alice", "r5"))
    record = records["down"]
    assert record.outcome == "fail" and record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("smtp_connect", "provider")
    assert record.failure.message == f"SMTP 127.0.0.1 port {mail_server.smtp_port}: connection refused"
    assert list(record.phases) == ["prepare", "submit"]
    assert_clean(mail_server, "r5")


async def test_dovecot_stopped_is_imap_connect(tmp_path: Path, mail_server: MailServer) -> None:
    with mail_server.dovecot_stopped():
        records, _ = await run_once(tmp_path, check_table("down", mail_server, "alice", "r5"))
    record = records["down"]
    assert record.outcome == "fail" and record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("imap_connect", "provider")
    assert record.failure.message == f"IMAP 127.0.0.1 port {mail_server.imap_port}: connection refused"
    assert list(record.phases) == ["prepare"]


async def test_timeout_in_a_silent_smtp_server_leaves_no_thread_or_socket(
        tmp_path: Path, mail_server: MailServer, nursery: trio.Nursery) -> None:
    """The core's timeout cancels a submission blocked in a worker thread (no greeting)."""
    connected = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        connected.set()
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    threads = threading.active_count()
    records, _ = await run_once(tmp_path, check_table("silent", mail_server, "alice", "s3",
                                                      smtp_port=port, timeout="500ms"))
    record = records["silent"]
    assert connected.is_set()
    assert record.failure is not None and record.failure.code == "timeout"
    assert record.failure.message == "no result within 500ms (during submit)"
    # The close after cancellation waits (shielded, up to 2 s) for the abandoned worker thread
    # to return; it returned at once, because the aborted socket woke its blocked recv().
    assert record.duration_s < 0.5 + 0.5
    assert established_to({port} | client_ports(mail_server)) == []
    assert threading.active_count() <= threads + 1  # trio may cache one idle worker more


# ---- delivery time ----------------------------------------------------------------------------

async def test_not_delivered_and_core_timeout_leave_nothing_behind(
        tmp_path: Path, mail_server: MailServer) -> None:
    """held2@ is put on hold by postfix: never delivered while the checks wait."""
    records, _ = await run_once(
        tmp_path, check_table("late", mail_server, "alice", "held2", deliver_within="700ms")
        + check_table("external", mail_server, "alice", "held2", deliver_within="700ms",
                      external=True)
        + check_table("cancelled", mail_server, "alice", "held2", deliver_within="1h",
                      timeout="1s"))
    late = records["late"]
    assert late.outcome == "fail" and late.failure is not None
    assert (late.failure.code, late.failure.attribution) == ("not_delivered", "provider")
    assert late.failure.message == "held2@probe.test did not receive the message within 700ms"
    assert list(late.phases) == ["prepare", "submit", "delivery"]
    assert 0.7 <= late.phases["delivery"] < 1.5
    external = records["external"]  # 004 二.3.a: delays to or from other providers are excluded
    assert external.failure is not None
    assert (external.failure.code, external.failure.attribution) == ("not_delivered", "third_party")
    assert external.details["external"] is True
    cancelled = records["cancelled"]  # the core's timeout cancels the IDLE wait in its thread
    assert cancelled.failure is not None
    assert cancelled.failure.code == "timeout"
    assert cancelled.failure.message == "no result within 1s (during delivery)"
    assert cancelled.duration_s < 1 + 2.5
    assert established_to(client_ports(mail_server)) == []
    assert mail_server.held_count() == 3
    mail_server.release_held()  # the next attempt's sweep removes them once they are stale


async def test_message_deferred_n_seconds_measures_n(tmp_path: Path, mail_server: MailServer) -> None:
    """held@ is put on hold; released after N seconds, delivery takes about N."""
    hold = 2.0
    mail_server.clear("held")

    async def release_later() -> None:
        deadline = trio.current_time() + 10
        while mail_server.held_count() == 0 and trio.current_time() < deadline:
            await trio.sleep(0.02)
        await trio.sleep(hold)
        await trio.to_thread.run_sync(mail_server.release_held)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        records, _ = await run_once(tmp_path, check_table("deferred", mail_server, "alice", "held"))
    record = records["deferred"]
    assert record.outcome == "ok", (record.failure, mail_server.logs())
    assert hold <= record.value < hold + 2.0
    assert hold <= record.phases["delivery"] < hold + 2.0
    # Postfix stamped the message when it accepted it, dovecot when postfix handed it on.
    assert hold - 1 <= record.details["send_delay_raw"] <= hold + 2
    assert record.phases["send_delay"] == record.details["send_delay_raw"]
    assert_clean(mail_server, "held")


async def test_threshold_is_separate_from_the_timeout(tmp_path: Path, mail_server: MailServer) -> None:
    records, _ = await run_once(
        tmp_path, check_table("slow", mail_server, "alice", "r6",
                              threshold='{ op = "<", value = "1ms" }'))
    record = records["slow"]
    assert record.outcome == "fail" and record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("too_slow", "provider")
    assert record.failure.message.endswith("expected < 1ms")
    assert record.value is not None and record.value > 0.001
    assert_clean(mail_server, "r6")


async def test_junk_folder(tmp_path: Path, mail_server: MailServer) -> None:
    records, _ = await run_once(tmp_path, check_table("junk", mail_server, "alice", "junk",
                                                      poll_max="200ms"))
    record = records["junk"]
    assert record.outcome == "fail" and record.failure is not None
    assert (record.failure.code, record.failure.attribution) == ("junk_folder", "provider")
    assert record.failure.message == "the message was filed in Junk, not INBOX"
    assert record.details["folder"] == "Junk"
    assert record.value is not None
    assert_clean(mail_server, "junk")


# ---- hygiene ----------------------------------------------------------------------------------

async def test_eicar_and_gtube_rejected_by_the_body_check_and_delivered_without(
        tmp_path: Path, mail_server: MailServer) -> None:
    checks = ""
    for kind, fmt, user in (("virus", "plain", "r7"), ("virus", "zip", "r8"), ("spam", "plain", "r9")):
        checks += check_table(f"{kind}-{fmt}-on", mail_server, "alice", user, hygiene=kind,
                              virus_format=fmt, smtp_port=mail_server.hygiene_port)
        checks += check_table(f"{kind}-{fmt}-off", mail_server, "alice", user, hygiene=kind,
                              virus_format=fmt)
    records, _ = await run_once(tmp_path, checks)
    for kind, fmt in (("virus", "plain"), ("virus", "zip"), ("spam", "plain")):
        on, off = records[f"{kind}-{fmt}-on"], records[f"{kind}-{fmt}-off"]
        assert on.outcome == "ok", (kind, fmt, on.failure, mail_server.logs())
        assert on.details["hygiene_result"] == "rejected" and on.details["smtp_reply"] == 550
        assert off.outcome == "fail" and off.failure is not None, (kind, fmt)
        assert (off.failure.code, off.failure.attribution) == (f"{kind}_delivered", "provider")
        assert off.details["hygiene_result"] == "delivered"
    assert_clean(mail_server, "r7", "r8", "r9")


async def test_hygiene_counts_only_what_the_check_says(tmp_path: Path, mail_server: MailServer) -> None:
    records, _ = await run_once(
        tmp_path, check_table("strict", mail_server, "alice", "s0", hygiene="spam",
                              smtp_port=mail_server.hygiene_port, caught='["junk", "stripped"]'))
    record = records["strict"]
    assert record.outcome == "fail" and record.failure is not None
    assert record.failure.code == "hygiene_rejected"
    assert record.details["hygiene_result"] == "rejected"


# ---- stale messages ---------------------------------------------------------------------------

async def test_sweep_removes_only_stale_probe_messages(tmp_path: Path, mail_server: MailServer) -> None:
    mail_server.clear("s1")
    client = imap(mail_server, "s1")
    try:
        client.create("Junk")
        append(client, "INBOX", "stale probe", f"{int(time.time()) - 7200}-0123456789abcdef")
        append(client, "Junk", "stale probe in junk", f"{int(time.time()) - 7200}-fedcba9876543210")
        append(client, "INBOX", "a customer's mail", None)
        append(client, "INBOX", "another attempt's", f"{int(time.time())}-00000000000000aa")
    finally:
        client.logout()
    records, _ = await run_once(tmp_path, check_table("sweep", mail_server, "alice", "s1",
                                                      sweep_after="1h"))
    record = records["sweep"]
    assert record.outcome == "ok", record.failure
    assert record.details["swept"] == 2
    client = imap(mail_server, "s1")
    try:
        client.select("INBOX")
        typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = sorted(p[1].decode().strip() for p in data if isinstance(p, tuple))
        assert subjects == ["Subject: a customer's mail", "Subject: another attempt's"]
        client.select("Junk")
        assert client.search(None, "ALL")[1] == [b""]
    finally:
        client.logout()
    mail_server.clear("s1")


# ---- mailbox groups (contract 003: a fault is 10 % or more of users) -------------------------

def group_table(check_id: str, server: MailServer, failing: int, rule: str) -> str:
    pairs = []
    for i in range(10):
        recipient = "blocked" if i >= 10 - failing else f"r{i}"
        pairs.append(f'{{ name = "s{i}-{recipient}", sender = "s{i}@probe.test", '
                     f'sender_password = {{ env = "{PASSWORD_ENV}" }}, '
                     f'recipient = "{recipient}@probe.test", '
                     f'recipient_password = {{ env = "{PASSWORD_ENV}" }} }}')
    joined = ",\n  ".join(pairs)
    return f"""\
[[check]]
id = "{check_id}"
probe = "mail"
smtp_host = "{server.host}"
smtp_port = {server.smtp_port}
smtp_tls = "none"
receive_port = {server.imap_port}
receive_tls = "none"
deliver_within = "10s"
group = {{ failing = "{rule}" }}
mailboxes = [
  {joined},
]

"""


async def test_ten_pairs_with_one_then_two_failing(tmp_path: Path, mail_server: MailServer) -> None:
    records, stored = await run_once(
        tmp_path, group_table("one-ge", mail_server, 1, ">= 10%")
        + group_table("one-gt", mail_server, 1, "> 10%")
        + group_table("two-gt", mail_server, 2, "> 10%"))
    one_ge, one_gt, two_gt = records["one-ge"], records["one-gt"], records["two-gt"]
    assert one_ge.outcome == "fail" and one_ge.failure is not None  # 1 of 10 is 10 %: a fault
    assert one_ge.failure.message == ("1 of 10 members failed (failing >= 10%): "
                                      "s9-blocked: smtp_rejected")
    assert one_ge.failure.attribution == "provider"
    assert one_gt.outcome == "ok", one_gt.failure  # exactly 10 % does not exceed 10 %
    assert two_gt.outcome == "fail" and two_gt.failure is not None
    assert two_gt.failure.message.startswith("2 of 10 members failed (failing > 10%)")
    members = {r.check: r for r in stored if ":" in r.check}
    assert len(members) == 30
    for check_id in ("one-ge", "one-gt", "two-gt"):
        assert records[check_id].details["probecore.members_ok"] == (8 if check_id == "two-gt" else 9)
    member = members["mail-test/one-ge:s0-r0"]
    assert member.outcome == "ok" and member.value is not None
    assert list(member.phases) == ["prepare", "submit", "delivery", "cleanup", "send_delay",
                                   "receive_delay"]
    assert member.target == one_ge.target
    blocked = members["mail-test/one-ge:s9-blocked"]
    assert blocked.failure is not None
    assert (blocked.failure.code, blocked.failure.attribution) == ("smtp_rejected", "provider")
    assert blocked.failure.message == "RCPT: 554 5.1.1 <blocked@probe.test>: Recipient address " \
        "rejected: mailbox unavailable (test rule)"
    assert blocked.details["smtp_reply"] == 554
    assert one_ge.value == max(m.value for m in members.values()
                               if m.check.startswith("mail-test/one-ge:") and m.value is not None)
    assert_clean(mail_server, *(f"r{i}" for i in range(10)), "blocked")
    for record in stored:
        assert_no_secret(record, mail_server.password)


# ---- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "expected"), [
    pytest.param('smtp_host = "h"\nsender = "a@x"\nrecipient = "b@x"\n'
                 'recipient_password = { env = "X" }', 'key "sender_password": required',
                 id="missing-password"),
    pytest.param('smtp_host = "h"\nsender = "a@x"\nsender_password = "hunter2-Lit"\n'
                 'recipient = "b@x"\nrecipient_password = { env = "X" }',
                 'key "sender_password": expected a secret reference', id="literal-password"),
    pytest.param('smtp_host = "h"\nsmtp_tls = "ssl"', 'key "smtp_tls"', id="bad-tls"),
    pytest.param('smtp_host = "h"\nhygiene = "worms"', 'key "hygiene"', id="bad-hygiene"),
    pytest.param('smtp_host = "h"\nmailboxes = []\nsender = "a@x"', 'key "sender_password"',
                 id="no-pair"),
])
def test_config_errors_name_the_key(tmp_path: Path, keys: str, expected: str) -> None:
    path = write_profile(tmp_path, HEAD + f'[[check]]\nid = "mail"\nprobe = "mail"\n{keys}\n')
    with pytest.raises(ProfileError) as info:
        load_profile(path, make_host().probes)
    message = str(info.value)
    assert f'check "mail": {expected}' in message, message
    assert "hunter2-Lit" not in message


# ---- probe run --once -------------------------------------------------------------------------

def test_cli_run_once(tmp_path: Path, mail_server: MailServer) -> None:
    """``probe run --once`` in a subprocess: exit 1, right records, no password in any output."""
    path = write_profile(tmp_path, HEAD + check_table("good", mail_server, "alice", "s2")
                         + check_table("wrong", mail_server, "alice", "s2", sender_env=WRONG_ENV)
                         + group_table("group", mail_server, 1, "> 10%"))
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data"),
           PASSWORD_ENV: mail_server.password, WRONG_ENV: WRONG_PASSWORD}
    run = subprocess.run(
        [sys.executable, "-m", "probecore", "run", "--once", str(path),
         "--store", f"sqlite:{tmp_path / 'mail.sqlite3'}"],
        env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    stdout, stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    for secret in (mail_server.password, WRONG_PASSWORD):
        assert secret not in stdout and secret not in stderr
    records = {r["check"]: r for r in assert_valid_records(stdout.splitlines())}
    good, wrong = records["mail-test/good"], records["mail-test/wrong"]
    assert good["outcome"] == "ok", good
    assert list(good["phases"]) == ["prepare", "submit", "delivery", "cleanup", "send_delay",
                                    "receive_delay"]
    assert wrong["failure"]["code"] == "smtp_auth"
    assert wrong["failure"]["attribution"] == "customer"
    assert records["mail-test/group"]["outcome"] == "ok"
    assert records["mail-test/group:s9-blocked"]["outcome"] == "fail"
    assert_clean(mail_server, "s2", *(f"r{i}" for i in range(10)))
