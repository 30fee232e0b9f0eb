"""The NUT protocol client (``probecore_plugins.power._nut``): against scripted trio servers for the
edges, and against the real upsd for the conversation as NUT speaks it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trustme
from probecore_plugins.power import _nut

if TYPE_CHECKING:
    from tests.servers.nut import Nut

pytest_plugins = ["tests.servers.nut"]

Script = dict[str, list[str]]


async def scripted_server(nursery: trio.Nursery, script: Script, seen: list[str] | None = None,
                          *, close_after: str | None = None) -> int:
    """A trio server answering each command line with the lines *script* gives for it."""

    async def handler(stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode()
                    if seen is not None:
                        seen.append(line)
                    if line == close_after:
                        return
                    answer = script.get(line, ["ERR UNKNOWN-COMMAND"])
                    try:
                        await stream.send_all("".join(a + "\n" for a in answer).encode())
                    except trio.BrokenResourceError:
                        return  # the client stopped reading a reply over its bounds and left

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def with_server(script: Script, body: Callable[[_nut.NutClient], Awaitable[None]],
                      seen: list[str] | None = None, **kw: object) -> None:
    async with trio.open_nursery() as nursery:
        port = await scripted_server(nursery, script, seen, **kw)  # type: ignore[arg-type]
        with trio.fail_after(5):
            async with await _nut.NutClient.connect("127.0.0.1", port) as client:
                await body(client)
        nursery.cancel_scope.cancel()


def test_split_line_unquotes_and_unescapes() -> None:
    assert _nut.split_line('VAR ups1 ups.status "OB LB"') == ["VAR", "ups1", "ups.status", "OB LB"]
    assert _nut.split_line(r'VAR u d "say \"hi\" \\ ok"') == ["VAR", "u", "d", 'say "hi" \\ ok']
    assert _nut.split_line('VAR u d ""') == ["VAR", "u", "d", ""]
    with pytest.raises(_nut.NutProtocolError, match="unterminated"):
        _nut.split_line('VAR u d "open')


def test_quote_round_trips() -> None:
    for word in ["OL", "OB LB", 'a "b"', "back\\slash", ""]:
        assert _nut.split_line("X " + _nut.quote(word)) == ["X", word]
    with pytest.raises(ValueError):
        _nut.quote("two\nlines")


async def test_list_var_and_get_var_over_split_packets() -> None:
    script = {
        "LIST VAR ups1": ["BEGIN LIST VAR ups1", 'VAR ups1 battery.charge "87"',
                          'VAR ups1 ups.status "OB DISCHRG"', "END LIST VAR ups1"],
        "GET VAR ups1 ups.load": ['VAR ups1 ups.load "40"'],
        "GET VAR ups1 nosuch": ["ERR VAR-NOT-SUPPORTED"],
        "LIST UPS": ["BEGIN LIST UPS", 'UPS ups1 "First UPS"', 'UPS ups2 "Second"', "END LIST UPS"],
    }

    async def body(client: _nut.NutClient) -> None:
        assert await client.list_var("ups1") == {"battery.charge": "87", "ups.status": "OB DISCHRG"}
        assert await client.get_var("ups1", "ups.load") == "40"
        assert await client.get_vars("ups1", ["ups.load", "nosuch"]) == {"ups.load": "40"}
        assert await client.list_ups() == {"ups1": "First UPS", "ups2": "Second"}

    await with_server(script, body)


@pytest.mark.parametrize(("reply", "code", "extra"), [
    ("ERR ACCESS-DENIED", "ACCESS-DENIED", ""),
    ("ERR UNKNOWN-UPS", "UNKNOWN-UPS", ""),
    ("ERR DATA-STALE", "DATA-STALE", ""),
    ("ERR INVALID-ARGUMENT some words", "INVALID-ARGUMENT", "some words"),
])
async def test_err_replies_raise_nut_error_with_the_code(reply: str, code: str, extra: str) -> None:
    async def body(client: _nut.NutClient) -> None:
        with pytest.raises(_nut.NutError) as caught:
            await client.list_var("ups1")
        assert (caught.value.code, caught.value.command, caught.value.extra) == (code, "LIST VAR ups1", extra)

    await with_server({"LIST VAR ups1": [reply]}, body)


@pytest.mark.parametrize("answer", [
    ["OK"],                                                   # no BEGIN
    ["BEGIN LIST VAR other", "END LIST VAR other"],           # another UPS's list
    ["BEGIN LIST VAR ups1", "garbage line", "END LIST VAR ups1"],
    ["BEGIN LIST VAR ups1", 'VAR ups1 x "unterminated'],
])
async def test_malformed_lists_are_protocol_errors(answer: list[str]) -> None:
    async def body(client: _nut.NutClient) -> None:
        with pytest.raises(_nut.NutProtocolError):
            await client.list_var("ups1")

    await with_server({"LIST VAR ups1": answer}, body)


async def test_server_closing_mid_reply_is_nut_closed() -> None:
    async def body(client: _nut.NutClient) -> None:
        with pytest.raises(_nut.NutClosed, match="closed"):
            await client.list_var("ups1")

    await with_server({}, body, close_after="LIST VAR ups1")


async def test_overlong_line_is_reply_too_large() -> None:
    async def body(client: _nut.NutClient) -> None:
        with pytest.raises(_nut.NutReplyTooLarge, match="longer than"):
            await client.get_var("ups1", "x")

    await with_server({"GET VAR ups1 x": ["VAR ups1 x " + "a" * (_nut.MAX_LINE + 10)]}, body)


@pytest.mark.parametrize(("lines", "width", "words"), [
    (_nut.MAX_LIST + 1, 0, f"more than {_nut.MAX_LIST} lines"),
    (_nut.MAX_LIST_BYTES // 1000 + 1, 1000, f"more than {_nut.MAX_LIST_BYTES // 1024} KiB"),
])
async def test_list_over_the_bounds_is_reply_too_large(lines: int, width: int, words: str) -> None:
    """A list that would end, but only after too many lines or bytes, is cut off unread."""
    answer = ["BEGIN LIST VAR ups1",
              *(f'VAR ups1 v{i} "{"x" * width}"' for i in range(lines)), "END LIST VAR ups1"]

    async def body(client: _nut.NutClient) -> None:
        with pytest.raises(_nut.NutReplyTooLarge, match=words):
            await client.list_var("ups1")

    await with_server({"LIST VAR ups1": answer}, body)


async def test_list_within_the_bounds_is_read() -> None:
    answer = ["BEGIN LIST VAR ups1", *(f"VAR ups1 v{i} {i}" for i in range(1000)), "END LIST VAR ups1"]

    async def body(client: _nut.NutClient) -> None:
        variables = await client.list_var("ups1")
        assert len(variables) == 1000 and variables["v999"] == "999"

    await with_server({"LIST VAR ups1": answer}, body)


async def test_login_quotes_and_logout_sends_once() -> None:
    seen: list[str] = []
    script = {"USERNAME mon": ["OK"], 'PASSWORD "pa ss"': ["OK"], "LOGOUT": ["OK Goodbye"],
              'SET VAR ups1 ups.status "OB LB"': ["OK"]}

    async def body(client: _nut.NutClient) -> None:
        await client.login("mon", "pa ss")
        await client.set_var("ups1", "ups.status", "OB LB")
        await client.logout()
        await client.logout()

    await with_server(script, body, seen)
    assert seen == ["USERNAME mon", 'PASSWORD "pa ss"', 'SET VAR ups1 ups.status "OB LB"', "LOGOUT"]


async def test_starttls_then_commands_go_over_tls() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = __import__("ssl").create_default_context()
    ca.configure_trust(client_ctx)
    seen: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        line = await stream.receive_some(100)
        seen.append(line.decode().strip())
        await stream.send_all(b"OK STARTTLS\n")
        tls = trio.SSLStream(stream, server_ctx, server_side=True, https_compatible=True)
        await tls.do_handshake()
        line = await tls.receive_some(100)
        seen.append(line.decode().strip())
        await tls.send_all(b'VAR ups1 ups.status "OL"\n')
        await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5):
            async with await _nut.NutClient.connect("127.0.0.1", port) as client:
                await client.starttls(client_ctx, "127.0.0.1")
                assert isinstance(client.stream, trio.SSLStream)
                assert await client.get_var("ups1", "ups.status") == "OL"
        nursery.cancel_scope.cancel()
    assert seen == ["STARTTLS", "GET VAR ups1 ups.status"]


# ---- the real upsd --------------------------------------------------------------------------


async def test_real_upsd_conversation(nut: Nut) -> None:
    with trio.fail_after(10):
        async with await _nut.NutClient.connect(nut.host, nut.port) as client:
            assert (await client.version()).startswith("Network UPS Tools upsd")
            assert await client.list_ups() == {"ups1": "Fake UPS ups1", "ups2": "Fake UPS ups2"}
            variables = await client.list_var("ups1")
            assert variables["ups.status"] == "OL"
            assert variables["battery.charge"] == "100"
            assert await client.get_var("ups2", "input.voltage") == "230.0"
            with pytest.raises(_nut.NutError) as caught:
                await client.get_var("nosuch", "ups.status")
            assert caught.value.code == "UNKNOWN-UPS"
            with pytest.raises(_nut.NutError) as caught:
                await client.get_var("ups1", "nosuch.var")
            assert caught.value.code == "VAR-NOT-SUPPORTED"
            # upsd in the tests has no certificate: STARTTLS is refused, not fatal.
            with pytest.raises(_nut.NutError) as caught:
                await client.command("STARTTLS")
            assert caught.value.code == "FEATURE-NOT-CONFIGURED"
            await client.logout()


async def test_real_upsd_set_var_needs_login(nut: Nut) -> None:
    with trio.fail_after(10):
        async with await _nut.NutClient.connect(nut.host, nut.port) as client:
            with pytest.raises(_nut.NutError) as caught:
                await client.set_var("ups2", "ups.status", "OB")
            assert caught.value.code == "USERNAME-REQUIRED"
            await client.login(*nut.admin)
            nut.dirty.add("ups2")  # for the fixture's reset
            await client.set_var("ups2", "ups.status", "OB LB")
            # upsd passes SET to the driver, which publishes the new value a moment later.
            while await client.get_var("ups2", "ups.status") != "OB LB":
                await trio.sleep(0.02)
            await client.logout()
        async with await _nut.NutClient.connect(nut.host, nut.port) as client:
            await client.login(nut.monitor[0], "wrong")
            with pytest.raises(_nut.NutError) as caught:
                await client.command("LOGIN", "ups1")
            assert caught.value.code in _nut.AUTH_ERRORS
