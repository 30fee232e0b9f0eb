"""``apprise``: notices through any apprise URL (Slack, Telegram, Teams, ntfy, mail, …).

Apprise URLs carry their tokens (``slack://T000/B000/XXXX``), so a channel holds secret
references only::

    [[channel]]
    id = "ops"
    kind = "apprise"
    urls = [{ env = "OPS_SLACK_URL" }, { file = "/etc/probecore/tgram.url" }]

The notice's ``title`` and ``text`` are sent as the title and body, to every URL of the channel;
the channel's notice is delivered when every URL accepted it. The notify type follows the notice
(``confirmed``, ``repeat``, ``escalated``, ``objective_breached``: failure; ``resolved``:
success; ``suspected``, ``flap``, ``objective_at_risk``: warning; ``test``: info), which most
services show as a colour or an icon.

apprise is imported when a notice is sent, never at ``probe`` start-up (it is heavy), and runs
in a worker thread with the route's timeout. Nothing apprise says reaches a message before the
URLs' parts are scrubbed from it: ``target()`` and errors show URL schemes only.
"""

from __future__ import annotations

import inspect
import re
import threading
import warnings
from typing import Any
from urllib.parse import urlsplit

import trio

from probecore import ChannelConfig, DeliveryContext, DeliveryError, Notice, Notifier, Secret

_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*)://")
_PIECES = re.compile(r"[/:@?&=#,;\s]+")
MIN_SCRUBBED = 4
"""URL pieces at least this long are scrubbed from apprise's messages (shorter ones are words
like ``to`` or ports, not tokens)."""

NOTIFY_TYPES = {"confirmed": "failure", "repeat": "failure", "escalated": "failure",
                "objective_breached": "failure", "resolved": "success", "suspected": "warning",
                "flap": "warning", "objective_at_risk": "warning", "test": "info"}


class AppriseConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    urls: list[Secret]
    """apprise URLs, as secret references: ``[{ env = "OPS_SLACK_URL" }]``."""

    def __post_init__(self) -> None:
        # Messages name the key themselves: msgspec gives no path for errors raised here.
        if not self.urls:
            raise ValueError('key "urls": name at least one apprise URL, as a secret reference '
                             '[{ env = "NAME" }]')


def scheme_of(url: str) -> str | None:
    """The scheme of an apprise URL (``slack``), or ``None`` when it has none."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def _shown(scheme: str | None) -> str:
    return scheme or "(no scheme)"


def _scrubber(urls: list[str]) -> Any:
    """A function removing every part of *urls* that may be a token from a text: the whole
    URLs, and their pieces between separators (host names with a dot are kept: they say where,
    not who)."""
    pieces: set[str] = set()
    for url in urls:
        scheme = scheme_of(url)
        try:
            host = urlsplit(url.strip()).hostname or ""
        except ValueError:
            host = ""
        rest = url.strip()[len(scheme) + 3:] if scheme else url.strip()
        for piece in _PIECES.split(rest):
            if len(piece) >= MIN_SCRUBBED and not (piece.lower() == host and "." in host):
                pieces.add(piece)
    whole = sorted({u for u in urls if u}, key=len, reverse=True)
    ordered = whole + sorted(pieces, key=len, reverse=True)

    def scrub(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "***")
        return text
    return scrub


class AppriseNotifier(Notifier[AppriseConfig]):
    kind = "apprise"
    Config = AppriseConfig

    def target(self, config: AppriseConfig) -> str:
        shown = []
        for secret in config.urls:
            try:
                shown.append(_shown(scheme_of(secret.reveal())))
            except Exception:  # SecretError: show the reference (never a value)
                shown.append(f"({secret.source} {secret.name}: not available)")
        return "apprise: " + ", ".join(shown)

    async def send(self, config: AppriseConfig, notice: Notice, ctx: DeliveryContext) -> None:
        urls: list[str] = []
        for number, secret in enumerate(config.urls, start=1):
            try:
                urls.append(ctx.reveal(secret))
            except Exception as exc:  # SecretError: its message names the reference, not a value
                raise DeliveryError(f'channel "{config.id}": url {number}: {exc}', retry=False) from None
        scrub = _scrubber(urls)
        try:
            error = await trio.to_thread.run_sync(_notify, config.id, urls, notice, ctx.timeout,
                                                  abandon_on_cancel=True)
        except Exception as exc:  # an apprise bug: its text may quote a URL, so scrub it too
            error = (f'channel "{config.id}": apprise failed: {type(exc).__name__}: {exc}', True)
        if error is not None:
            message, retry = error
            raise DeliveryError(ctx.scrub(scrub(message)), retry=retry)


def _notify(channel: str, urls: list[str], notice: Notice, timeout: float) -> tuple[str, bool] | None:
    """Send through apprise (in a worker thread); ``None`` when every URL accepted the notice,
    else the (unscrubbed) problem and whether retrying may help."""
    apprise = _apprise()
    asset = apprise.AppriseAsset(app_id="probecore", app_desc="probecore notices")
    servers = []
    for number, url in enumerate(urls, start=1):
        scheme = scheme_of(url)
        where = f'channel "{channel}": url {number} ({_shown(scheme)})'
        if scheme is None:
            return f"{where} is not an apprise URL (expected scheme://…)", False
        if not _known_scheme(scheme):
            return f'{where}: apprise has no "{scheme}://" service', False
        server = apprise.Apprise.instantiate(url, asset=asset)
        if server is None:
            return f"{where}: apprise cannot use this URL (check its parts against apprise's docs)", False
        servers.append(server)
    sender = apprise.Apprise(asset=asset)
    for server in servers:
        sender.add(server)
    kwargs: dict[str, Any] = {"title": notice.title, "body": notice.text,
                              "notify_type": NOTIFY_TYPES.get(notice.kind, "info")}
    if "timeout" in _notify_parameters(apprise.Apprise.notify):
        kwargs["timeout"] = timeout
    result = sender.notify(**kwargs)
    if result:
        return None
    return _failure(channel, urls, result), True


def _failure(channel: str, urls: list[str], result: Any) -> str:
    """One line: which URLs failed and what apprise logged about them (apprise 2: per-service
    results with their log entries; apprise 1: a bare ``False``)."""
    services = list(getattr(result, "results", ()) or ())
    if not services:
        return f'channel "{channel}": apprise did not deliver the notice'
    problems = []
    for number, service in enumerate(services, start=1):
        if bool(service):
            continue
        scheme = scheme_of(str(getattr(service, "url", "") or ""))
        if scheme is None and number <= len(urls):
            scheme = scheme_of(urls[number - 1])
        scheme = _shown(scheme)
        status = getattr(getattr(service, "status", None), "name", "FAILURE").lower()
        logs = []
        try:
            for entry in service.logs():
                line = " ".join(str(getattr(entry, "message", entry)).split())
                if line and line not in logs:
                    logs.append(line)
        except Exception:  # the logs are a courtesy; the failure is what counts
            pass
        detail = "; ".join(logs[-2:]) or ("timed out" if status == "timeout" else "not accepted")
        problems.append(f"url {number} ({scheme}): {detail}")
    return f'channel "{channel}": ' + ("; ".join(problems) or "apprise did not deliver the notice")


_loaded: Any = None
_schemes: Any = None
_lock = threading.Lock()


def _apprise() -> Any:
    """The apprise module, with its service plugins loaded: once per process, with the warnings
    its imports raise (deprecated standard modules) silenced; they are apprise's, not the
    user's."""
    global _loaded, _schemes
    with _lock:
        if _loaded is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import apprise
                try:
                    from apprise.manager_plugins import NotificationManager
                    _schemes = NotificationManager()
                    _ = "json" in _schemes  # loads every service module now, under this filter
                except ImportError:  # an apprise without the plugin manager: instantiate() judges
                    _schemes = None
            _loaded = apprise
    return _loaded


def _known_scheme(scheme: str) -> bool:
    return _schemes is None or scheme in _schemes


def _notify_parameters(function: Any) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
