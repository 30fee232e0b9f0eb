"""Client-side pieces the built-in plugins share: TLS contexts, the User-Agent, bounded HTTP heads.

A helper module (its name starts with ``_``), not a plugin: the web, ftp and mail probes and the
webhook and email channels build their TLS contexts here, so that certificate checking means the
same everywhere and each context is built once. The HTTP clients (web probe, Redfish) bound what
a server may send before its body with :class:`ResponseHeads`.
"""

from __future__ import annotations

import ssl
from functools import lru_cache

import h11

MAX_RESPONSE_HEAD = 64 * 1024
"""Bytes one response head (status line and headers) may take."""
MAX_INFORMATIONAL = 32
"""``1xx`` responses one request may get before its final response."""


@lru_cache(maxsize=64)
def tls_context(verify: bool, ca_file: str | None, *, system_cas: bool = False,
                alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A client context, one per argument set (building one reads the CA store, ~25 ms).

    :param verify: check the certificate and host name; ``False`` accepts any certificate.
    :param ca_file: a CA bundle to trust: *instead of* the system store, or with *system_cas*
        in addition to it.
    :param alpn: protocols to offer (``("http/1.1",)``).
    :raises OSError, ssl.SSLError: *ca_file* cannot be read or is not a CA bundle (not cached).
    """
    if verify:
        if system_cas:
            context = ssl.create_default_context()
            if ca_file is not None:
                context.load_verify_locations(cafile=ca_file)
        else:
            context = ssl.create_default_context(cafile=ca_file)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def load_failure(exc: BaseException) -> str:
    """Why a CA bundle could not be loaded, in a few words (``No such file or directory``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _user_agent() -> str:
    try:
        from importlib.metadata import version
        return f"probecore/{version('probecore')}"
    except Exception:
        return "probecore"


USER_AGENT = _user_agent()
"""``probecore/<version>``: what the HTTP clients (web probe, webhook channel) call themselves."""


class ResponseHeads:
    """An h11 client connection whose response heads are bounded, however they arrive.

    h11's ``max_incomplete_event_size`` bounds a head only while it is incomplete: a head that
    arrives whole in one read is parsed whatever its size, and ``1xx`` responses may come
    without end. Give received data to :meth:`feed` (not to ``http.receive_data``) and pass every
    event to :meth:`over`; a non-empty answer is why the response is over the bounds (the
    caller's ``reply_too_large``). An incomplete head over the bound makes h11 raise
    ``RemoteProtocolError``; :meth:`overflowed` tells that one from other protocol errors.
    """

    def __init__(self, max_head: int = MAX_RESPONSE_HEAD, max_informational: int = MAX_INFORMATIONAL):
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self.max_informational = max_informational
        self.informational = 0
        self._fed = 0     # bytes given to h11
        self._parsed = 0  # of them, bytes of the heads parsed so far

    def feed(self, data: bytes) -> None:
        self._fed += len(data)
        self.http.receive_data(data)

    def over(self, event: object) -> str:
        """Why *event* goes over the bounds (``""``: it does not)."""
        if not isinstance(event, (h11.Response, h11.InformationalResponse, h11.EndOfMessage)):
            return ""
        consumed = self._fed - len(self.http.trailing_data[0])
        size, self._parsed = consumed - self._parsed, consumed
        if isinstance(event, h11.EndOfMessage):  # a kept-alive connection's next head starts here
            self.informational = 0
            return ""
        if size > self.max_head:
            return f"a response head longer than {self.max_head // 1024} KiB"
        if isinstance(event, h11.InformationalResponse):
            self.informational += 1
            if self.informational > self.max_informational:
                return f"more than {self.max_informational} informational (1xx) responses"
        return ""

    def overflowed(self, exc: h11.RemoteProtocolError) -> str:
        """Why *exc* is h11's own bound on an incomplete head (``""``: it is another error)."""
        if exc.error_status_hint == 431:
            return f"a response head longer than {self.max_head // 1024} KiB"
        return ""
