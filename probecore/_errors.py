"""Errors that reach the user as one line (never a traceback).

Every exception the CLI turns into an exit status derives from :class:`ProbecoreError`; its
``str()`` is the whole message, written so that a user can act on it without reading code.
"""

from __future__ import annotations


class ProbecoreError(Exception):
    """Base of the errors probecore reports to the user as one line."""

    exit_status = 1


class UsageError(ProbecoreError):
    """Bad command-line arguments or input files (exit status 2)."""

    exit_status = 2


class ProfileError(UsageError):
    """A profile that does not validate.

    The message names the file, the table (``check "ftp"``), the key and what was expected,
    e.g. ``site.toml: check "ftp": key "port": expected an integer, got "21a"``.
    """

    def __init__(self, path: str, problem: str, *, table: str | None = None, key: str | None = None):
        self.path = path
        self.table = table
        self.key = key
        self.problem = problem
        parts = [path]
        if table:
            parts.append(table)
        if key:
            parts.append(f'key "{key}"')
        parts.append(problem)
        super().__init__(": ".join(parts))


class PluginError(ProbecoreError):
    """A plugin that cannot be loaded or registered (duplicate kind, bad hook, import failure)."""

    exit_status = 2


class StoreError(ProbecoreError):
    """A store that cannot be opened, migrated or written."""


class SecretError(ProbecoreError):
    """A secret reference that cannot be resolved; the message never contains the secret."""
