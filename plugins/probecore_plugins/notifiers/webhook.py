"""``webhook``: POST the notice as JSON (placeholder: being written)."""

from __future__ import annotations

from probecore import ChannelConfig, Notifier


class WebhookNotifier(Notifier[ChannelConfig]):
    kind = "webhook"
