"""``email``: SMTP (placeholder: being written)."""

from __future__ import annotations

from probecore import ChannelConfig, Notifier


class EmailNotifier(Notifier[ChannelConfig]):
    kind = "email"
