"""Built-in notification channels: ``console``, ``webhook``, ``email``, ``apprise``.

One plugin for all of them; each channel is a module of this package.
"""

from __future__ import annotations

from probecore import hookimpl

from .apprise import AppriseNotifier
from .console import ConsoleNotifier
from .email import EmailNotifier
from .webhook import WebhookNotifier


@hookimpl
def probecore_add_notifiers(registry):  # type: ignore[no-untyped-def]
    for notifier in (ConsoleNotifier, WebhookNotifier, EmailNotifier, AppriseNotifier):
        registry.add(notifier)
