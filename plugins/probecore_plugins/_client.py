"""Client-side pieces the built-in plugins share: TLS contexts and the User-Agent.

A helper module (its name starts with ``_``), not a plugin: the web, ftp and mail probes and the
webhook and email channels build their TLS contexts here, so that certificate checking means the
same everywhere and each context is built once.
"""

from __future__ import annotations

import ssl
from functools import lru_cache


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
