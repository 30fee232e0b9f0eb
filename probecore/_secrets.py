"""Secret references (``{ env = "NAME" }`` / ``{ file = "path" }``) and their redaction.

A profile never holds a password; it holds a :class:`Secret` that says where the password is.
The value is read only when a probe asks for it through :meth:`CheckContext.reveal`, and every
value revealed in an attempt is scrubbed from that attempt's record before it leaves the
scheduler, so a library that echoes a password in an exception cannot leak it.

Redaction is here and only here (:func:`redact`). A protocol rarely echoes a password as it
was typed: it sends it base64-encoded (SASL PLAIN ``\\0user\\0password``, LOGIN, HTTP Basic
``user:password``), quoted and escaped (an IMAP quoted string, JSON, a Python repr) or
percent-encoded (a URL's query or user info). :func:`redacted_forms` derives those forms from
each value, so every caller (the scheduler for records, the delivery contexts for channel
errors) scrubs all of them.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, quote_plus

from ._errors import SecretError

REDACTED = "***"


class Secret:
    """Where a secret lives. ``repr`` and ``str`` show the reference, never the value."""

    __slots__ = ("source", "name")

    def __init__(self, source: str, name: str):
        if source not in ("env", "file"):
            raise ValueError(f"unknown secret source {source!r}")
        self.source = source
        self.name = name

    @classmethod
    def from_table(cls, table: object, base_dir: Path | None = None) -> Secret:
        """Build from a profile value; raises ``ValueError`` with a user-facing message."""
        if isinstance(table, str):
            raise ValueError('expected a secret reference { env = "NAME" } or { file = "path" }, '
                             "not a literal string (secrets never live in profiles)")
        if not isinstance(table, dict) or len(table) != 1 or next(iter(table)) not in ("env", "file"):
            raise ValueError('expected a secret reference { env = "NAME" } or { file = "path" }')
        (source, name), = table.items()
        if not isinstance(name, str) or not name:
            raise ValueError(f"expected a non-empty string for the secret's {source}")
        if source == "file" and base_dir is not None and not os.path.isabs(name):
            name = str(base_dir / name)
        return cls(source, name)

    def reveal(self) -> str:
        """Read the value now. Raises :class:`SecretError` (without the value) if it is missing."""
        if self.source == "env":
            value = os.environ.get(self.name)
            if value is None:
                raise SecretError(f"secret: environment variable {self.name} is not set")
            return value
        try:
            return Path(self.name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"secret: cannot read file {self.name}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"Secret({self.source}={self.name!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self.source, self.name) == (other.source, other.name)

    def __hash__(self) -> int:
        return hash((self.source, self.name))


MIN_ENCODED = 4
"""Encoded forms shorter than this are not searched for: a two-character base64 fragment of a
short secret would match ordinary text everywhere (and says little about the secret)."""
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


@lru_cache(maxsize=256)
def redacted_forms(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The forms of *value* that :func:`redact` removes: ``(literals, base64 cores)``.

    *literals* are replaced where they occur: the value itself, backslash-escaped inside double
    quotes (IMAP quoted strings, C-like strings), JSON- and repr-escaped, HTML-escaped, and
    percent-encoded the ways :mod:`urllib.parse` does (``quote`` with and without ``/`` safe,
    ``quote_plus``) in upper- and lower-case hex.

    *cores* are for base64: the value may sit anywhere inside an encoded string (after
    ``\\0user\\0`` in SASL PLAIN, after ``user:`` in HTTP Basic, alone in SASL LOGIN), so its
    bytes fall on any of the three alignments of a base64 group. Each core is the run of base64
    characters that depends on the value's bytes alone for one alignment (standard and URL-safe
    alphabets); whatever the surrounding bytes and padding, an encoding that contains the value
    contains a core, and :func:`redact` removes the whole base64 word around it.
    """
    literals = {value, value.replace("\\", "\\\\").replace('"', '\\"'), json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1], html.escape(value)}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="")):
        literals.add(encoded)
        literals.add(_PERCENT.sub(lambda m: m.group().lower(), encoded))
    literals.discard("")
    raw = value.encode("utf-8")
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        # Character i holds bits [6i, 6i + 6); the value's bits are [8 shift, 8 (shift + len)).
        first, end = -(-8 * shift // 6), (8 * (shift + len(raw))) // 6
        core = encoded[first:end]
        if len(core) >= MIN_ENCODED:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))
    return tuple(sorted(literals, key=len, reverse=True)), tuple(sorted(cores))


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in *text*, in every form
    :func:`redacted_forms` derives, with ``***``.

    Linear in the length of *text* (plain substring searches, no backtracking regex), so a
    megabyte of server reply costs milliseconds.
    """
    spans: list[tuple[int, int]] = []
    for value in secrets:
        if not value:
            continue
        literals, cores = redacted_forms(value)
        for form in literals:
            spans.extend(_find(text, form))
        for core in cores:
            for start, end in _find(text, core):
                while start > 0 and text[start - 1] in _B64_ALPHABET:
                    start -= 1
                while end < len(text) and (text[end] in _B64_ALPHABET or text[end] == "="):
                    end += 1
                spans.append((start, end))
    if not spans:
        return text
    spans.sort()
    out, last = [], 0
    for start, end in spans:
        if start < last:  # overlaps the span just replaced: extend it
            if end > last:
                last = end
            continue
        out.append(text[last:start])
        out.append(REDACTED)
        last = end
    out.append(text[last:])
    return "".join(out)


def _find(text: str, form: str) -> list[tuple[int, int]]:
    found, at = [], text.find(form)
    while at != -1:
        found.append((at, at + len(form)))
        at = text.find(form, at + len(form))
    return found
