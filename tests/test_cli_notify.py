"""``probe notify test`` and ``probe notify list``, through a parser built by ``add_parsers``
(the way ``probe`` builds its own) and ``COMMANDS``, against a real SQLite store."""

from __future__ import annotations

import json
import socket

import pytest

from probecore import ChannelConfig, Notifier, Secret, hookimpl, timestamp_ms
from probecore._cli import _open, _Parser
from probecore._cli_notify import COMMANDS, add_parsers
from probecore._errors import UsageError
from probecore.testing import make_host

TOKEN = "tok-5a4b3c2d1e0f"
"""Stands for a service token inside an apprise URL: printed nowhere."""

PROFILE = """
[profile]
name = "p"
[[check]]
id = "c"
probe = "tcp"
host = "127.0.0.1"
port = 9
[[channel]]
id = "log"
kind = "console"
path = "{log}"
[[channel]]
id = "chat"
kind = "apprise"
urls = [{{ env = "P_CHAT_URL" }}]
[[notify]]
id = "ops"
channels = ["log"]
[[notify]]
id = "pager"
channels = ["chat"]
timeout = "5s"
[[notify]]
id = "both"
channels = ["log", "chat"]
"""


class LeakyConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    password: Secret


class LeakyNotifier(Notifier[LeakyConfig]):
    """A careless channel: its error message holds the password it revealed."""

    kind = "leaky"
    Config = LeakyConfig

    async def send(self, config, notice, ctx):
        password = ctx.reveal(config.password)
        raise RuntimeError(f"login as admin:{password} refused")


class LeakyPlugin:
    @hookimpl
    def probecore_add_notifiers(self, registry):
        registry.add(LeakyNotifier)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """The profile's path, the console channel's file, and the store option; the apprise
    channel points at a port where nothing listens."""
    log = tmp_path / "notices.log"
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(log=log))
    monkeypatch.setenv("P_CHAT_URL", f"json://127.0.0.1:{closed_port()}/hooks/{TOKEN}")
    return str(path), log, f"sqlite:{tmp_path / 's.sqlite3'}"


def parser() -> _Parser:
    top = _Parser(prog="probe")
    add_parsers(top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser))
    return top


def run(capsys, *argv: str, host=None) -> tuple[int, str, str]:
    args = parser().parse_args(list(argv))
    status = COMMANDS[args.command](args, host or make_host())
    out, err = capsys.readouterr()
    return status, out, err


def stored(profile: str, store: str) -> list:
    host = make_host()
    opened = _open(store, "p", host)
    try:
        return [(d, opened.attempts(d.id)) for d in opened.deliveries("p")]
    finally:
        opened.close()


def test_a_test_notice_through_a_console_channel_is_delivered_and_listed(capsys, setup):
    profile, log, store = setup
    status, out, err = run(capsys, "notify", "test", profile, "ops", "--store", store)
    assert status == 0
    assert out.splitlines() == [f"log ({log}): delivered"]
    written = log.read_text()
    assert "[p] test notice through route ops" in written and written.count("\n") == 1
    ((delivery, attempts),) = stored(profile, store)
    assert delivery.notice.kind == "test" and delivery.route == "ops" and delivery.channel == "log"
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.delivered_ms is not None
    assert [ok for _, ok, _ in attempts] == [True]


def test_a_test_notice_to_a_down_apprise_service_fails_with_the_error_and_is_recorded(capsys, setup):
    profile, log, store = setup
    status, out, err = run(capsys, "notify", "test", profile, "pager", "--store", store)
    assert status == 1
    (line,) = out.splitlines()
    assert line.startswith('chat (apprise: json): not delivered: channel "chat": url 1 (json): ')
    assert "connection error" in line.lower()
    assert "1 of 1 channels did not deliver" in err
    assert TOKEN not in out + err and "hooks" not in out + err
    ((delivery, attempts),) = stored(profile, store)
    assert delivery.notice.kind == "test" and delivery.channel == "chat"
    # Recorded with its attempt, and not left pending for 'probe run' to retry.
    assert delivery.status == "expired" and delivery.attempts == 1
    assert len(attempts) == 1 and attempts[0][1] is False and "url 1 (json)" in attempts[0][2]
    assert TOKEN not in delivery.last_error
    assert not log.exists()


def test_a_route_of_two_channels_reports_each_and_fails_if_one_fails(capsys, setup):
    profile, log, store = setup
    status, out, _ = run(capsys, "notify", "test", profile, "both", "--store", store)
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == f"log ({log}): delivered"
    assert lines[1].startswith("chat (apprise: json): not delivered: ")
    assert {(d.channel, d.status) for d, _ in stored(profile, store)} == {("log", "delivered"), ("chat", "expired")}
    assert "through route both" in log.read_text()


def test_list_shows_the_outbox_as_a_table_and_as_json(capsys, setup):
    profile, log, store = setup
    run(capsys, "notify", "test", profile, "ops", "--store", store)
    run(capsys, "notify", "test", profile, "pager", "--store", store)
    status, out, _ = run(capsys, "notify", "list", profile, "--store", store)
    assert status == 0
    assert "2 deliveries of p" in out
    rows = [line for line in out.splitlines() if " test " in f" {line} "]
    assert len(rows) == 2
    assert any(" ops " in r and " log " in r and " delivered " in r for r in rows)
    assert any(" pager " in r and " chat " in r and " expired " in r and "url 1 (json)" in r for r in rows)
    assert "0 pending, 1 delivered, 1 expired" in out
    assert TOKEN not in out

    status, out, _ = run(capsys, "notify", "list", profile, "--format", "json", "--store", store)
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["route"], r["channel"], r["status"], r["attempts"]) for r in listed] == [
        ("test", "ops", "log", "delivered", 1), ("test", "pager", "chat", "expired", 1)]
    assert listed[0]["delivered_at"] and listed[0]["last_error"] is None and listed[0]["next_attempt_at"] is None
    assert listed[1]["delivered_at"] is None and "url 1 (json)" in listed[1]["last_error"]
    assert listed[0]["id"] < listed[1]["id"] and listed[0]["event_id"].startswith("test-")
    assert TOKEN not in out

    _, out, _ = run(capsys, "notify", "list", profile, "--status", "expired", "--format", "json", "--store", store)
    assert [json.loads(line)["channel"] for line in out.splitlines()] == ["chat"]
    _, out, _ = run(capsys, "notify", "list", profile, "--status", "pending", "--store", store)
    assert "0 pending deliveries of p" in out


def test_an_unknown_route_is_a_usage_error_listing_the_routes(capsys, setup):
    profile, _, store = setup
    with pytest.raises(UsageError) as caught:
        run(capsys, "notify", "test", profile, "nope", "--store", store)
    message = str(caught.value)
    assert message == "probe notify test: no route 'nope' in profile p; its routes: ops, pager, both"
    assert stored(profile, store) == []


def test_a_profile_without_routes_says_so(capsys, tmp_path):
    path = tmp_path / "bare.toml"
    path.write_text('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n')
    with pytest.raises(UsageError, match=r"profile p has no \[\[notify\]\] routes"):
        run(capsys, "notify", "test", str(path), "ops", "--store", f"sqlite:{tmp_path / 's.sqlite3'}")


def test_a_secret_in_a_channel_error_is_scrubbed(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("P_PASSWORD", "hunter2-very-secret")
    path = tmp_path / "p.toml"
    path.write_text('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
                    '[[channel]]\nid = "l"\nkind = "leaky"\npassword = { env = "P_PASSWORD" }\n'
                    '[[notify]]\nid = "r"\nchannels = ["l"]\n')
    store = f"sqlite:{tmp_path / 's.sqlite3'}"
    host = make_host(LeakyPlugin())
    status, out, err = run(capsys, "notify", "test", str(path), "r", "--store", store, host=host)
    assert status == 1
    assert out.strip() == "l (leaky): not delivered: RuntimeError: login as admin:*** refused"
    _, listed, _ = run(capsys, "notify", "list", str(path), "--format", "json", "--store", store, host=host)
    assert "hunter2" not in out + err + listed and "admin:***" in listed


def test_a_timeout_is_the_routes(capsys, tmp_path):
    class SlowNotifier(Notifier[ChannelConfig]):
        kind = "slow"

        async def send(self, config, notice, ctx):
            import trio
            await trio.sleep(30)

    class SlowPlugin:
        @hookimpl
        def probecore_add_notifiers(self, registry):
            registry.add(SlowNotifier)

    path = tmp_path / "p.toml"
    path.write_text('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
                    '[[channel]]\nid = "s"\nkind = "slow"\n[[notify]]\nid = "r"\nchannels = ["s"]\ntimeout = "0.2s"\n')
    status, out, _ = run(capsys, "notify", "test", str(path), "r", "--store", f"sqlite:{tmp_path / 's.sqlite3'}",
                         host=make_host(SlowPlugin()))
    assert status == 1 and out.strip().startswith("s (slow): not delivered: timed out after")


def test_a_test_delivery_is_not_due_for_a_running_probe_run_while_it_is_sent(capsys, tmp_path):
    """A 'probe run' on the same store must not pick the test notice up and send it too."""
    seen: list[list] = []

    class SpyNotifier(Notifier[ChannelConfig]):
        kind = "spy"

        async def send(self, config, notice, ctx):
            opened = _open(store, "p", make_host())
            try:  # what a delivery worker would find due a minute from now, mid-send
                seen.append(opened.due_deliveries("p", timestamp_ms(notice.at) + 60_000))
                seen.append(opened.deliveries("p", "pending"))
            finally:
                opened.close()

    class SpyPlugin:
        @hookimpl
        def probecore_add_notifiers(self, registry):
            registry.add(SpyNotifier)

    path = tmp_path / "p.toml"
    path.write_text('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
                    '[[channel]]\nid = "s"\nkind = "spy"\n[[notify]]\nid = "r"\nchannels = ["s"]\n')
    store = f"sqlite:{tmp_path / 's.sqlite3'}"
    status, out, _ = run(capsys, "notify", "test", str(path), "r", "--store", store, host=make_host(SpyPlugin()))
    assert status == 0 and out.strip() == "s (spy): delivered"
    due, pending = seen
    assert due == [] and [d.notice.kind for d in pending] == ["test"]  # queued, but not due


@pytest.mark.parametrize("argv, message", [
    (["notify"], "the following arguments are required: ACTION"),
    (["notify", "test", "p.toml"], "the following arguments are required: ROUTE"),
    (["notify", "list", "p.toml", "--status", "lost"], "argument --status: invalid choice: 'lost'"),
    (["notify", "list", "p.toml", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
])
def test_bad_arguments_are_one_line_usage_errors(argv, message):
    with pytest.raises(UsageError) as caught:
        parser().parse_args(argv)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_parsed_arguments():
    args = parser().parse_args(["notify", "list", "p.toml", "--status", "pending", "--format", "json",
                                "--store", "sqlite:x"])
    assert (args.command, args.action, args.profile, args.status, args.format, args.store) == (
        "notify", "list", "p.toml", "pending", "json", "sqlite:x")
    args = parser().parse_args(["notify", "test", "p.toml", "ops"])
    assert (args.action, args.route, args.store) == ("test", "ops", None)


def test_a_webhook_token_echoed_by_the_receiver_reaches_no_output_and_no_store(capsys, tmp_path):
    """The docs promise a webhook URL's query is never shown: not in the test's output, not in
    'notify list' (table and JSON), not in the SQLite file."""
    from urllib.parse import quote_plus

    from tests.test_notify_webhook import URL_TOKEN, Receiver

    receiver = Receiver()
    try:
        receiver.answer(401, f"unknown token {URL_TOKEN} ({quote_plus(URL_TOKEN)})")
        url = receiver.url(f"/hook?token={quote_plus(URL_TOKEN)}")
        path = tmp_path / "p.toml"
        path.write_text('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
                        f'[[channel]]\nid = "hook"\nkind = "webhook"\nurl = "{url}"\n'
                        '[[notify]]\nid = "r"\nchannels = ["hook"]\n')
        db = tmp_path / "s.sqlite3"
        status, out, err = run(capsys, "notify", "test", str(path), "r", "--store", f"sqlite:{db}")
        assert status == 1
        assert out.strip() == f"hook ({receiver.url()}): not delivered: POST {receiver.url()}: 401 unknown token *** (***)"
        _, table, table_err = run(capsys, "notify", "list", str(path), "--store", f"sqlite:{db}")
        _, listed, _ = run(capsys, "notify", "list", str(path), "--format", "json", "--store", f"sqlite:{db}")
        assert json.loads(listed)["last_error"].endswith("401 unknown token *** (***)")
        assert len(receiver.received()) == 1
    finally:
        receiver.close()
    stored_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("s.sqlite3*"))
    for leak in (URL_TOKEN, quote_plus(URL_TOKEN)):
        for text in (out, err, table, table_err, listed):
            assert leak not in text
        assert leak.encode() not in stored_bytes
