"""``probecore_plugins._client.ResponseHeads``: response heads bounded however the bytes arrive.

Unit tests at the seam (bytes in, h11 events out); the web and Redfish clients use it against
real and hostile servers in tests/test_web_probe.py and tests/test_hostile_servers.py.
"""

from __future__ import annotations

import h11
import pytest
from probecore_plugins._client import MAX_INFORMATIONAL, MAX_RESPONSE_HEAD, ResponseHeads

FILLER = b"X-Filler: " + b"f" * 90 + b"\r\n"  # 102 bytes


def head(size: int, status: bytes = b"200 OK", length: int = 0) -> bytes:
    """A response head of about *size* bytes (status line and headers) declaring *length*."""
    start = b"HTTP/1.1 " + status + b"\r\n"
    end = b"Content-Length: %d\r\n\r\n" % length
    return start + FILLER * max(0, (size - len(start) - len(end)) // len(FILLER)) + end


def events(heads: ResponseHeads, data: bytes, piece: int) -> tuple[list[str], str]:
    """Feed *data* in pieces of *piece* bytes; (event names, the first reason over the bounds)."""
    heads.http.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    heads.http.send(h11.EndOfMessage())
    seen: list[str] = []
    for start in range(0, len(data), piece):
        heads.feed(data[start:start + piece])
        while True:
            try:
                event = heads.http.next_event()
            except h11.RemoteProtocolError as exc:
                return seen, heads.overflowed(exc) or f"other: {exc}"
            if event is h11.NEED_DATA:
                break
            if why := heads.over(event):
                return seen, why
            seen.append(type(event).__name__)
            if isinstance(event, h11.EndOfMessage):
                return seen, ""
    return seen, ""


@pytest.mark.parametrize("piece", [1 << 20, 4096], ids=["whole", "in-pieces"])
def test_a_head_over_the_bound_is_over_however_it_arrives(piece: int) -> None:
    assert events(ResponseHeads(), head(MAX_RESPONSE_HEAD - 2048), piece)[1] == ""
    seen, why = events(ResponseHeads(), head(MAX_RESPONSE_HEAD + 2048), piece)
    assert why == "a response head longer than 64 KiB" and "Response" not in seen


def test_informational_responses_are_counted() -> None:
    some = b"HTTP/1.1 102 Processing\r\n\r\n" * MAX_INFORMATIONAL + head(200)
    assert events(ResponseHeads(), some, 1 << 20) == (
        ["InformationalResponse"] * MAX_INFORMATIONAL + ["Response", "EndOfMessage"], "")
    seen, why = events(ResponseHeads(), b"HTTP/1.1 102 Processing\r\n\r\n" * (MAX_INFORMATIONAL + 1), 4096)
    assert why == f"more than {MAX_INFORMATIONAL} informational (1xx) responses"


def test_a_kept_alive_connection_measures_each_head_from_its_own_start() -> None:
    """A large body between two responses is not part of the second head."""
    body = b"b" * (3 * MAX_RESPONSE_HEAD)
    heads = ResponseHeads()
    seen, why = events(heads, head(1000, length=len(body)) + body, 8192)
    assert why == "" and seen[0] == "Response" and seen[-1] == "EndOfMessage"
    heads.http.start_next_cycle()
    seen, why = events(heads, head(MAX_RESPONSE_HEAD - 2048), 8192)
    assert (seen, why) == (["Response", "EndOfMessage"], "")
