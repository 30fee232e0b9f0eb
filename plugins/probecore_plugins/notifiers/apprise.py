"""``apprise``: any apprise URL (placeholder: being written)."""

from __future__ import annotations

from probecore import ChannelConfig, Notifier


class AppriseNotifier(Notifier[ChannelConfig]):
    kind = "apprise"
