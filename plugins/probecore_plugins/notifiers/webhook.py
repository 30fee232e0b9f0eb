"""``webhook``: POST the notice as JSON (``probecore.notice/1``, see docs/notice-webhook.md).

HTTP/1.1 with trio + h11 (+ ssl for https), one connection per notice (``Connection: close``).
The body is ``msgspec.json.encode(notice)``; the headers carry the idempotency key
(``notice_id``), the event id and, with ``secret``, an HMAC-SHA256 signature of the exact body
bytes. A 2xx status is delivered; 408, 429, 5xx and connection errors are worth retrying soon;
other statuses (4xx, 3xx: redirects are not followed) are not. The timeout is the route's: the
delivery worker wraps ``send`` in ``trio.fail_after``, and every socket is closed on the way out.

URLs are shown (``target``, error messages) without user info and without the query, where
webhook providers tend to put tokens. Both are also concealed (``ctx.conceal``): a receiver
that echoes them in its reason phrase (``401 bad token abc…``), raw, percent-encoded or inside
the Basic credentials, has them scrubbed from the error like a secret, before the reason is
shortened, so they reach neither the outbox nor ``probe notify`` output. Query values and a
user name shorter than :data:`MIN_CONCEALED` characters (``?v=1``) are not worth garbling
every message for; a password in the user info is concealed whatever its length.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import h11
import msgspec
import trio

from probecore import (
    ChannelConfig,
    DeliveryContext,
    DeliveryError,
    Notice,
    Notifier,
    Secret,
)

from .._client import USER_AGENT, tls_context

DEFAULT_PORTS = {"http": 80, "https": 443}
RETRY_STATUSES = frozenset({408, 425, 429})
RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                              "idempotency-key", "x-probecore-event", "x-probecore-signature"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
MAX_RESPONSE_HEAD = 64 * 1024
MAX_REASON = 100
MIN_CONCEALED = 4


class _Url(msgspec.Struct, frozen=True):
    scheme: str
    host: str           # without brackets
    port: int
    target: str         # path and query, as sent in the request line
    host_header: str
    username: str | None
    password: str | None

    @property
    def shown(self) -> str:
        """Scheme, host, port and path: no user info, no query (either may hold a token)."""
        return f"{self.scheme}://{self.host_header}{self.target.split('?', 1)[0]}"

    def sensitive(self) -> list[str]:
        """What :attr:`shown` leaves out: the user info, and the query, whole and each value
        (the password whatever its length, the rest from :data:`MIN_CONCEALED` characters)."""
        query = self.target.split("?", 1)[1] if "?" in self.target else ""
        parts = [self.username or "", query, unquote_plus(query)]
        parts += [value for _, value in parse_qsl(query, keep_blank_values=True)]
        long_enough = [p for p in dict.fromkeys(parts) if len(p) >= MIN_CONCEALED]
        return [self.password, *long_enough] if self.password else long_enough


def _parse_url(text: str) -> _Url:
    if any(c in text for c in " \r\n\t"):
        raise ValueError('key "url": the URL contains white space')
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f'key "url": not a valid URL ({exc})') from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f'key "url": expected an http:// or https:// URL, got "{scheme}:"')
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError('key "url": the URL has no host name')
    if port == 0:
        raise ValueError('key "url": port 0 is not a port')
    port = port or DEFAULT_PORTS[scheme]
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return _Url(scheme, host, port, target, host_header, username, password)


class WebhookConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    url: str
    """``http://`` or ``https://``. User info in it is sent as HTTP Basic authentication."""
    secret: Secret | None = None
    """The HMAC key: the body is signed (``X-Probecore-Signature: sha256=<hex>``)."""
    headers: dict[str, str] = {}
    """Extra request headers (not the ones the notice protocol sets)."""
    verify: bool = True
    """Verify the server's TLS certificate and host name (https)."""
    ca_file: str | None = None
    """An extra CA bundle (PEM) to trust besides the system's."""

    def __post_init__(self) -> None:
        # Messages name the key themselves: msgspec gives no path for errors raised here.
        _parse_url(self.url)
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f'key "headers": "{name}" is not a header name')
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f'key "headers": "{name}" is set by the webhook channel itself')
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f'key "headers.{name}": a header value cannot contain a line break')
        if self.ca_file is not None and not self.verify:
            raise ValueError('key "ca_file": has no effect with verify = false')


def sign(secret: str, body: bytes) -> str:
    """The ``X-Probecore-Signature`` value of *body* with the key *secret*."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The system CAs plus *ca_file*, offering HTTP/1.1."""
    try:
        return tls_context(verify, ca_file, system_cas=True, alpn=("http/1.1",))
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot load ca_file {ca_file}: {exc}", retry=False) from None


class WebhookNotifier(Notifier[WebhookConfig]):
    kind = "webhook"
    Config = WebhookConfig

    def target(self, config: WebhookConfig) -> str:
        return _parse_url(config.url).shown

    def request(self, config: WebhookConfig, notice: Notice, ctx: DeliveryContext) -> tuple[_Url, bytes, list[tuple[str, str]]]:
        """The URL, body and headers of the POST for *notice* (reveals the secrets it needs)."""
        url = _parse_url(config.url)
        for part in url.sensitive():
            ctx.conceal(part)
        body = msgspec.json.encode(notice)
        headers = [("Host", url.host_header), ("User-Agent", USER_AGENT),
                   ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Idempotency-Key", notice.notice_id), ("X-Probecore-Event", notice.event_id)]
        if config.secret is not None:
            try:
                key = ctx.reveal(config.secret)
            except Exception as exc:  # SecretError: its message names the reference, not a value
                raise DeliveryError(f"POST {url.shown}: {exc}", retry=False) from None
            headers.append(("X-Probecore-Signature", sign(key, body)))
        if url.username is not None or url.password is not None:
            # Messages and target() show url.shown, which never holds the user info.
            basic = base64.b64encode(f"{url.username or ''}:{url.password or ''}".encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {basic}"))
        user_agent = next((v for k, v in config.headers.items() if k.lower() == "user-agent"), None)
        if user_agent is not None:
            headers = [h for h in headers if h[0] != "User-Agent"]
        headers.extend(config.headers.items())
        return url, body, headers

    async def send(self, config: WebhookConfig, notice: Notice, ctx: DeliveryContext) -> None:
        url, body, headers = self.request(config, notice, ctx)
        where = f"POST {url.shown}"
        status, reason = await _post(url, body, headers, config, where)
        if 200 <= status < 300:
            return
        reason = ctx.scrub(reason)[:MAX_REASON]  # scrubbed before shortened: no half token left
        problem = f"{where}: {status} {reason}".rstrip()
        if 300 <= status < 400:
            raise DeliveryError(f"{problem} (redirects are not followed: update the url)", retry=False)
        raise DeliveryError(problem, retry=status in RETRY_STATUSES or status >= 500)


async def _post(url: _Url, body: bytes, headers: list[tuple[str, str]], config: WebhookConfig,
                where: str) -> tuple[int, str]:
    """Send one request; returns the response's status and reason (the body is not read)."""
    context = _tls_context(config.verify, config.ca_file) if url.scheme == "https" else None
    try:
        tcp = await trio.open_tcp_stream(url.host, url.port)
    except OSError as exc:
        raise DeliveryError(f"{where}: cannot connect to {url.host_header}: {_reason(exc)}") from None
    stream: Any = tcp
    try:
        if context is not None:
            stream = trio.SSLStream(tcp, context, server_hostname=url.host, https_compatible=True)
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = cause.verify_message or cause.reason or "verification failed"
                    raise DeliveryError(f"{where}: TLS certificate of {url.host} not accepted: {reason}",
                                        retry=False) from None
                reason = getattr(cause, "reason", None) or _reason(cause) or "connection closed"
                raise DeliveryError(f"{where}: TLS handshake failed: {reason}") from None
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        data = http.send(h11.Request(method="POST", target=url.target,
                                     headers=[*headers, ("Connection", "close")]))
        data = (data or b"") + (http.send(h11.Data(data=body)) or b"") + (http.send(h11.EndOfMessage()) or b"")
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, OSError):
            pass  # the server may have answered early (a 4xx before reading the body): read that
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise DeliveryError(f"{where}: not an HTTP response ({exc})") from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    cause = exc.__cause__ or exc
                    raise DeliveryError(f"{where}: connection lost before a response: "
                                        f"{_reason(cause) or 'reset'}") from None
                http.receive_data(chunk)
                if not chunk and http.their_state is h11.SEND_RESPONSE:
                    raise DeliveryError(f"{where}: connection closed before a response") from None
                continue
            if isinstance(event, h11.Response):
                reason = event.reason.decode("latin-1", "replace").strip()
                return event.status_code, " ".join(reason.split())
            if isinstance(event, h11.ConnectionClosed):
                raise DeliveryError(f"{where}: connection closed before a response") from None
            # h11.InformationalResponse (100 Continue …): keep reading
    finally:
        # At once, also when cancelled (the route's timeout): no close_notify handshake.
        await trio.aclose_forcefully(stream)


def _reason(exc: BaseException) -> str:
    """One lower-case line: "connection refused", "name or service not known"."""
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        text = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc.strerror)
        return text[:1].lower() + text[1:]
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = dict.fromkeys(_reason(e) for e in cause.exceptions)
        return "; ".join(reasons)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
