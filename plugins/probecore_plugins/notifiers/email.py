"""``email``: the notice as a mail, submitted over SMTP (stdlib ``smtplib``).

Keys (a ``[[channel]]`` table): ``host``; ``port`` (default 587; 465 with ``security = "tls"``);
``security = "starttls" | "tls" | "none"`` (default ``starttls``: the server must offer STARTTLS,
nothing is sent in clear; ``tls`` is implicit TLS from the first byte); ``username`` and
``password`` (a secret reference) for SMTP AUTH, once per attempt with the best mechanism the
server offers (PLAIN, else LOGIN, else CRAM-MD5), so a wrong password counts once towards a
lockout (with ``password`` alone the login name is the ``sender`` address); ``sender`` (the ``From:`` address, also the envelope sender); ``to`` (one
address or more); ``verify = true`` checks the certificate and host name, ``ca_file`` adds a CA
bundle to the system's; ``subject_prefix`` goes before the notice's title.

The message is ``multipart/alternative``: ``text/plain`` is the notice's text, ``text/html`` the
same, escaped, in a minimal page. Its ``Message-ID`` is derived from the notice id
(:func:`message_id`), so a notice sent again after a crash (between the server's ``250`` and the
delivery being recorded) carries the same id and mail clients show it once. ``X-Probecore-Notice``
and ``X-Probecore-Event`` carry the notice and event ids.

Outcomes: a ``250`` to DATA is delivered. Connection errors, a lost connection and 4xx replies are
worth retrying soon (``DeliveryError(retry=True)``); 5xx replies (AUTH refused, a recipient
refused), a certificate not accepted, STARTTLS or AUTH not offered, a missing secret or an
unreadable ``ca_file`` are not (``retry=False``). When some recipients are accepted and the others
refused for good (5xx), the notice counts as delivered: sending again would repeat it to those
who have it and still not reach the others. Messages are one line; they never contain the
password, in any form a server might echo (base64 of SASL PLAIN or LOGIN …): it is read
through ``ctx.reveal``, and the server's text is scrubbed before it is shortened.

Every reply is bounded (4 MiB, 20,000 lines, smtplib's 8 KiB line): a server that answers
EHLO with endless ``250-`` lines, or a megabyte line, ends the attempt at once with "reply too
large" (worth retrying: it is the server's fault, and the bound makes a retry cheap).

The blocking client runs in a worker thread the way the ``mail`` probe runs it: when the route's
timeout cancels ``send``, every socket of the attempt is shut down (waking the thread at once),
the thread is awaited (shielded, at most 2 s) and the sockets are closed; the route's timeout is
also each socket's I/O timeout, as a backstop.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from typing import Annotated, Any, Literal

import msgspec
import trio

from probecore import (
    ChannelConfig,
    DeliveryContext,
    DeliveryError,
    Notice,
    Notifier,
    Secret,
    SecretError,
)

from .._blocking import ReplyTooLarge, clip
from .._blocking import SMTPClient as _SMTP
from .._blocking import Sockets as _Sockets
from .._blocking import Worker as _Worker
from .._blocking import one_line as _one_line
from .._blocking import reason as _reason
from .._blocking import smtp_reply as _smtp_reply
from .._client import load_failure, tls_context

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
HELO = "probecore.invalid"
NOTICE_HEADER = "X-Probecore-Notice"
EVENT_HEADER = "X-Probecore-Event"
POLICY = policy.SMTP.clone(max_line_length=998)
"""CRLF; header lines up to RFC 5322's limit, so that ids (no spaces) are never folded."""


class EmailConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    host: NonEmpty
    port: Port | None = None
    """Default 587 (``starttls``, ``none``) or 465 (``tls``)."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: NonEmpty | None = None
    password: Secret | None = None
    sender: NonEmpty
    """The ``From:`` address (``Name <addr>`` or ``addr``); also the envelope sender."""
    to: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]
    verify: bool = True
    ca_file: NonEmpty | None = None
    subject_prefix: str = ""

    def __post_init__(self) -> None:
        # Messages name the key themselves: msgspec gives no path for errors raised here.
        for key, value in [("sender", self.sender), *(("to", a) for a in self.to),
                           ("subject_prefix", self.subject_prefix), ("host", self.host)]:
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f'key "{key}": cannot contain a line break')
        for key, value in [("sender", self.sender), *(("to", a) for a in self.to)]:
            if "@" not in email.utils.parseaddr(value)[1]:
                raise ValueError(f'key "{key}": "{value}" is not a mail address')
        if self.username is not None and self.password is None:
            raise ValueError('key "username": needs a password = { env = "…" } (or file) as well')
        if self.ca_file is not None and not self.verify:
            raise ValueError('key "ca_file": has no effect with verify = false')

    @property
    def port_(self) -> int:
        return self.port or (465 if self.security == "tls" else 587)

    @property
    def envelope_sender(self) -> str:
        return email.utils.parseaddr(self.sender)[1]

    @property
    def recipients(self) -> list[str]:
        return [email.utils.parseaddr(a)[1] for a in self.to]


def message_id(notice_id: str) -> str:
    """The ``Message-ID`` of every mail of the notice *notice_id* (the same on every resend)."""
    return f"<{hashlib.sha256(notice_id.encode('utf-8')).hexdigest()[:32]}@probecore>"


def render_html(notice: Notice) -> str:
    """The notice as a minimal HTML page; every piece of text is escaped."""
    lines = notice.text.splitlines()
    if lines and lines[0].strip() == notice.title.strip():
        lines = lines[1:]  # the text starts with the title, shown as the heading already
    body = "<br>\n".join(html.escape(line) for line in lines)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(notice.title)}</title></head>\n<body>\n"
            f"<h2>{html.escape(notice.title)}</h2>\n"
            f"<p style=\"font-family: monospace\">{body}</p>\n"
            f"<p style=\"color: #666; font-size: small\">notice {html.escape(notice.notice_id)}</p>\n"
            "</body></html>\n")


def build_message(config: EmailConfig, notice: Notice) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Subject"] = _one_line(config.subject_prefix + notice.title)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = message_id(notice.notice_id)
    msg[NOTICE_HEADER] = _one_line(notice.notice_id)
    msg[EVENT_HEADER] = _one_line(notice.event_id)
    msg["Auto-Submitted"] = "auto-generated"
    text = notice.text if notice.text.endswith("\n") else notice.text + "\n"
    msg.set_content(text)
    msg.add_alternative(render_html(notice), subtype="html")
    return msg


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The system CAs plus *ca_file*."""
    try:
        return tls_context(verify, ca_file, system_cas=True)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot load ca_file {ca_file}: {_one_line(load_failure(exc))}",
                            retry=False) from None


class EmailNotifier(Notifier[EmailConfig]):
    kind = "email"
    Config = EmailConfig

    def target(self, config: EmailConfig) -> str:
        return ", ".join(config.recipients)

    async def send(self, config: EmailConfig, notice: Notice, ctx: DeliveryContext) -> None:
        where = f"SMTP {config.host} port {config.port_}"
        password = None
        if config.password is not None:
            try:
                password = ctx.reveal(config.password)
            except SecretError as exc:  # its message names the reference, never a value
                raise DeliveryError(f"{where}: {_one_line(str(exc))}", retry=False) from None
        context = _tls_context(config.verify, config.ca_file) if config.security != "none" else None
        message = build_message(config, notice).as_bytes()
        worker = _Worker(max(float(ctx.timeout), 1.0), trio.to_thread.current_default_thread_limiter())
        try:
            await worker.run(_submit, config, password, message, worker.sockets, context, where)
        except DeliveryError as exc:
            # A server's text may echo the password in any encoding: scrub, then shorten.
            raise DeliveryError(clip(ctx.scrub(str(exc))), retry=exc.retry) from None
        except ReplyTooLarge as exc:
            raise DeliveryError(str(exc)) from None
        finally:
            await worker.close()


def _submit(config: EmailConfig, password: str | None, message: bytes, sockets: _Sockets,
            context: ssl.SSLContext | None, where: str) -> None:
    """One SMTP session, in a worker thread: connect, (STARTTLS), (AUTH), MAIL, RCPT, DATA."""
    client: smtplib.SMTP | None = None
    try:
        client = _SMTP(sockets, context if config.security == "tls" else None,
                       local_hostname=HELO, timeout=sockets.io_timeout)
        client._host = config.host  # type: ignore[attr-defined]  # STARTTLS's SNI; set only by connect-in-constructor
        code, text = client.connect(config.host, config.port_)
        if code != 220:
            raise _reply_error(f"{where}: greeting", code, text)
        _ehlo(client, where)
        if config.security == "starttls":
            if not client.has_extn("starttls"):
                raise DeliveryError(f"{where}: STARTTLS not offered (security = \"starttls\")",
                                    retry=False)
            client.starttls(context=sockets.starttls(context))  # abort reaches a stalled handshake
            _ehlo(client, where)
        if password is not None:
            login = config.username or config.envelope_sender
            try:
                client.login(login, password)
            except smtplib.SMTPNotSupportedError:
                raise DeliveryError(f"{where}: the server offers no AUTH here", retry=False) from None
            except smtplib.SMTPAuthenticationError as exc:
                raise _reply_error(f"{where}: AUTH as {login} refused", exc.smtp_code,
                                   exc.smtp_error) from None
        try:
            refused = client.sendmail(config.envelope_sender, config.recipients, message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise _refused(where, exc.recipients, everyone=True) from None
        except smtplib.SMTPSenderRefused as exc:
            raise _reply_error(f"{where}: MAIL FROM {config.envelope_sender} refused",
                               exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPDataError as exc:
            raise _reply_error(f"{where}: DATA refused", exc.smtp_code, exc.smtp_error) from None
        if any(400 <= code < 500 for code, _ in refused.values()):
            raise _refused(where, refused, everyone=False)
        # Only permanent refusals of some recipients: the others have it (see the docstring).
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass
    except DeliveryError:
        _close(client)
        raise
    except ssl.SSLCertVerificationError as exc:
        _close(client)
        raise DeliveryError(f"{where}: TLS certificate of {config.host} not accepted: "
                            f"{exc.verify_message or exc.reason or 'verification failed'}",
                            retry=False) from None
    except smtplib.SMTPResponseException as exc:  # SMTPConnectError, SMTPHeloError, …
        _close(client)
        raise _reply_error(where, exc.smtp_code, exc.smtp_error) from None
    except (OSError, smtplib.SMTPException) as exc:
        _close(client)
        lost = isinstance(exc, smtplib.SMTPServerDisconnected)
        raise DeliveryError(f"{where}: {'connection lost' if lost else _one_line(_reason(exc))}") from None


def _ehlo(client: smtplib.SMTP, where: str) -> None:
    """EHLO, refused or answered with garbage (smtplib returns those rather than raising):
    the server's fault, not "no AUTH offered"."""
    code, text = client.ehlo()
    if code != 250:
        raise _reply_error(f"{where}: EHLO", code, text)


def _reply_error(what: str, code: int, text: Any) -> DeliveryError:
    """A reply the server gave: 4xx is worth retrying soon, anything else (5xx) is not."""
    return DeliveryError(f"{what}: {_smtp_reply(code, text)}", retry=400 <= code < 500)


def _refused(where: str, recipients: dict[str, tuple[int, Any]], *, everyone: bool) -> DeliveryError:
    parts = [f"{address} {code} {_one_line(text)}".rstrip() for address, (code, text) in recipients.items()]
    retry = any(400 <= code < 500 for code, _ in recipients.values())
    tail = "" if everyone else " (the other recipients accepted it)"
    return DeliveryError(f"{where}: recipient refused: {'; '.join(parts)}{tail}", retry=retry)


def _close(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        client.close()
    except OSError:
        pass
