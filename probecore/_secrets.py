"""Secret references (``{ env = "NAME" }`` / ``{ file = "path" }``) and their redaction.

A profile never holds a password; it holds a :class:`Secret` that says where the password is.
The value is read only when a probe asks for it through :meth:`CheckContext.reveal`, and every
value revealed in an attempt is scrubbed from that attempt's record before it leaves the
scheduler, so a library that echoes a password in an exception cannot leak it.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def redact(text: str, secrets: set[str]) -> str:
    """Replace every occurrence of each secret value in *text* with ``***``."""
    for value in sorted(secrets, key=len, reverse=True):
        if value:
            text = text.replace(value, REDACTED)
    return text
