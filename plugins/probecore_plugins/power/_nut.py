"""A small client for the NUT network protocol (``upsd``, TCP port 3493) on trio streams.

The protocol is line based (``docs/net-protocol.txt`` in Network UPS Tools): the client sends one
command per line, the server answers with one line (``OK``, ``VAR ...``, ``ERR <CODE> ...``) or
a ``BEGIN LIST ...`` / ``END LIST ...`` block. Arguments with spaces are double-quoted, with
``\\"`` and ``\\\\`` escapes. Supported here: ``VER``, ``LIST UPS``, ``LIST VAR``, ``GET VAR``,
``SET VAR`` (for tests and admin tools), ``USERNAME``/``PASSWORD``, ``STARTTLS`` and ``LOGOUT``.

Errors: an ``ERR`` reply raises :class:`NutError` carrying the code (``ACCESS-DENIED``,
``UNKNOWN-UPS``, ``DATA-STALE`` …); a reply that does not fit the protocol raises
:class:`NutProtocolError` (:class:`NutReplyTooLarge` when it is over the bounds below); a
connection the server closes raises :class:`NutClosed`. Network
errors (``OSError``, ``trio.BrokenResourceError``) pass through unchanged. Timeouts are the
caller's cancel scopes: no method here waits on its own.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import trio

DEFAULT_PORT = 3493
MAX_LINE = 64 * 1024
MAX_LIST = 10_000            # lines of one LIST reply (a UPS has a few hundred variables at most)
MAX_LIST_BYTES = 1024 * 1024  # bytes of one LIST reply

AUTH_ERRORS = frozenset({"ACCESS-DENIED", "USERNAME-REQUIRED", "PASSWORD-REQUIRED",
                         "INVALID-USERNAME", "INVALID-PASSWORD", "USERNAME-DENIED",
                         "PASSWORD-DENIED"})
"""``ERR`` codes that mean the credentials (or their absence) were refused."""
NOT_FOUND_ERRORS = frozenset({"UNKNOWN-UPS", "VAR-NOT-SUPPORTED", "CMD-NOT-SUPPORTED"})
"""``ERR`` codes that mean the UPS or variable asked for does not exist there."""
UNAVAILABLE_ERRORS = frozenset({"DATA-STALE", "DRIVER-NOT-CONNECTED"})
"""``ERR`` codes that mean upsd is up but has no current data from the UPS's driver."""


class NutError(Exception):
    """upsd answered ``ERR <code> [extra]``."""

    def __init__(self, code: str, command: str, extra: str = ""):
        self.code = code
        self.command = command
        self.extra = extra
        super().__init__(f"{command}: ERR {code}{' ' + extra if extra else ''}")


class NutProtocolError(Exception):
    """A reply that the protocol does not allow here (or a line that is far too long)."""


class NutReplyTooLarge(NutProtocolError):
    """A reply over the client's bounds: a line over :data:`MAX_LINE` bytes, or a list over
    :data:`MAX_LIST` lines or :data:`MAX_LIST_BYTES` bytes (a server that never ends it)."""


class NutClosed(NutProtocolError):
    """The server closed the connection before the reply was complete."""


def quote(word: str) -> str:
    """*word* as one protocol argument: bare if it has no space or quote, else double-quoted."""
    if word and not any(c in word for c in ' "\\\t\r\n'):
        return word
    if "\n" in word or "\r" in word:
        raise ValueError("a NUT argument cannot contain a line break")
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_line(line: str) -> list[str]:
    """A reply line's words, with double-quoted words unquoted (``VAR ups x "a b"`` → 4 words)."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise NutProtocolError(f"unterminated quoted string in {line!r}")
                c = line[i]
                if c == "\\" and i + 1 < n:
                    chars.append(line[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            words.append("".join(chars))
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            words.append(line[i:j])
            i = j
    return words


class NutClient:
    """One conversation with upsd over a trio stream. Use :meth:`connect` or wrap a stream.

    ``async with await NutClient.connect(host, port) as nut: ...`` closes the stream at the end
    (after a polite ``LOGOUT`` if :meth:`logout` was not called and the stream still works).
    """

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self._buffer = bytearray()
        self._logged_out = False

    @classmethod
    async def connect(cls, host: str, port: int = DEFAULT_PORT) -> NutClient:
        return cls(await trio.open_tcp_stream(host, port))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    # ---- lines -------------------------------------------------------------------------------

    async def send_line(self, *words: str) -> None:
        await self.stream.send_all((" ".join(quote(w) if i else w for i, w in enumerate(words))
                                    + "\n").encode())

    async def read_line(self) -> str:
        while True:
            end = self._buffer.find(b"\n", 0, MAX_LINE + 1)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line.rstrip(b"\r").decode("utf-8", "replace")
            if len(self._buffer) > MAX_LINE:
                raise NutReplyTooLarge(f"reply line longer than {MAX_LINE} bytes")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise NutClosed("upsd closed the connection"
                                + (f" after {bytes(self._buffer)[:80]!r}" if self._buffer else ""))
            self._buffer += chunk

    async def _reply(self, command: str) -> list[str]:
        """The next reply line's words; an ``ERR`` reply raises :class:`NutError`."""
        return self._words(await self.read_line(), command)

    @staticmethod
    def _words(line: str, command: str) -> list[str]:
        words = split_line(line)
        if not words:
            raise NutProtocolError(f"{command}: empty reply")
        if words[0] == "ERR":
            raise NutError(words[1] if len(words) > 1 else "UNKNOWN", command, " ".join(words[2:]))
        return words

    async def command(self, *words: str) -> list[str]:
        """Send one command; return its one-line reply's words."""
        await self.send_line(*words)
        return await self._reply(words[0])

    async def _expect_ok(self, *words: str) -> str:
        reply = await self.command(*words)
        if reply[0] != "OK":
            raise NutProtocolError(f"{words[0]}: expected OK, got {' '.join(reply)[:120]!r}")
        return " ".join(reply[1:])

    async def list(self, *query: str) -> list[list[str]]:
        """``LIST <query>``: the words of every line between ``BEGIN LIST`` and ``END LIST``."""
        name = " ".join(("LIST", *query))
        await self.send_line("LIST", *query)
        begin = await self._reply(name)
        if begin[:2] != ["BEGIN", "LIST"] or begin[2:] != list(query):
            raise NutProtocolError(f"{name}: expected 'BEGIN {name}', got {' '.join(begin)[:120]!r}")
        lines: list[list[str]] = []
        size = 0
        while True:
            line = await self.read_line()
            size += len(line) + 1
            if size > MAX_LIST_BYTES:
                raise NutReplyTooLarge(f"{name}: more than {MAX_LIST_BYTES // 1024} KiB without END LIST")
            words = self._words(line, name)
            if words[:2] == ["END", "LIST"]:
                if words[2:] != list(query):
                    raise NutProtocolError(f"{name}: mismatched {' '.join(words)[:120]!r}")
                return lines
            lines.append(words)
            if len(lines) > MAX_LIST:
                raise NutReplyTooLarge(f"{name}: more than {MAX_LIST} lines without END LIST")

    # ---- commands ------------------------------------------------------------------------------

    async def version(self) -> str:
        """``VER``: the server's version line (``Network UPS Tools upsd 2.8.0 - ...``)."""
        await self.send_line("VER")
        line = await self.read_line()
        if line.startswith("ERR "):
            words = split_line(line)
            raise NutError(words[1] if len(words) > 1 else "UNKNOWN", "VER")
        return line

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """``STARTTLS``, then the TLS handshake; later commands go over TLS."""
        reply = await self.command("STARTTLS")
        if reply[:2] != ["OK", "STARTTLS"]:
            raise NutProtocolError(f"STARTTLS: expected 'OK STARTTLS', got {' '.join(reply)[:120]!r}")
        if self._buffer:
            raise NutProtocolError("STARTTLS: data received before the TLS handshake")
        tls = trio.SSLStream(self.stream, context, server_hostname=server_hostname,
                             https_compatible=True)
        await tls.do_handshake()
        self.stream = tls

    async def login(self, username: str, password: str | None) -> None:
        """``USERNAME`` then (if given) ``PASSWORD``. upsd checks them only when a command
        needs rights, or on ``LOGIN``; wrong ones are refused there with ``ACCESS-DENIED``."""
        await self._expect_ok("USERNAME", username)
        if password is not None:
            await self._expect_ok("PASSWORD", password)

    async def list_ups(self) -> dict[str, str]:
        """``LIST UPS``: UPS name → description."""
        result = {}
        for words in await self.list("UPS"):
            if len(words) < 2 or words[0] != "UPS":
                raise NutProtocolError(f"LIST UPS: unexpected line {' '.join(words)[:120]!r}")
            result[words[1]] = words[2] if len(words) > 2 else ""
        return result

    async def list_var(self, ups: str) -> dict[str, str]:
        """``LIST VAR <ups>``: every variable of *ups* with its value."""
        result = {}
        for words in await self.list("VAR", ups):
            if len(words) != 4 or words[0] != "VAR" or words[1] != ups:
                raise NutProtocolError(f"LIST VAR {ups}: unexpected line {' '.join(words)[:120]!r}")
            result[words[2]] = words[3]
        return result

    async def get_var(self, ups: str, var: str) -> str:
        """``GET VAR <ups> <var>``: its value."""
        reply = await self.command("GET", "VAR", ups, var)
        if len(reply) != 4 or reply[0] != "VAR" or reply[1:3] != [ups, var]:
            raise NutProtocolError(f"GET VAR: unexpected reply {' '.join(reply)[:120]!r}")
        return reply[3]

    async def get_vars(self, ups: str, names: Sequence[str]) -> dict[str, str]:
        """Several ``GET VAR``; variables the UPS does not have are left out."""
        values = {}
        for name in names:
            try:
                values[name] = await self.get_var(ups, name)
            except NutError as exc:
                if exc.code != "VAR-NOT-SUPPORTED":
                    raise
        return values

    async def set_var(self, ups: str, var: str, value: str) -> None:
        """``SET VAR <ups> <var> "<value>"`` (needs a login with the SET action)."""
        await self._expect_ok("SET", "VAR", ups, var, value)

    async def logout(self) -> None:
        """``LOGOUT`` (the server answers ``OK Goodbye`` and closes)."""
        if not self._logged_out:
            self._logged_out = True
            await self._expect_ok("LOGOUT")
