"""``console``: notices as text lines on stderr, or appended to a file (``path``)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from probecore import ChannelConfig, DeliveryContext, DeliveryError, Notice, Notifier


class ConsoleConfig(ChannelConfig, kw_only=True, forbid_unknown_fields=True, frozen=True):
    path: str | None = None
    """Append notices to this file instead of writing them to stderr."""


class ConsoleNotifier(Notifier[ConsoleConfig]):
    kind = "console"
    Config = ConsoleConfig

    def target(self, config: ConsoleConfig) -> str:
        return config.path or "stderr"

    async def send(self, config: ConsoleConfig, notice: Notice, ctx: DeliveryContext) -> None:
        line = f"{notice.at} {notice.notice_id} {notice.title}\n"
        if config.path is None:
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        try:
            await trio.to_thread.run_sync(_append, Path(config.path), line)
        except OSError as exc:
            raise DeliveryError(f"cannot append to {config.path}: {exc.strerror}") from None


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line)
