"""``push``: a check whose records are pushed from outside with ``probe push`` (backups, tickets).

The scheduler never runs it. The check's ``interval`` says how often evidence is expected, and
``confirm`` how many failures in a row are an outage, like any check. Example::

    [[check]]
    id = "backup-daily"
    probe = "push"
    interval = "1d"
    unit = "s"              # unit of the pushed --value, if any
"""

from __future__ import annotations

from probecore import CheckContext, Observation, ProbeConfig, ProbeKind, hookimpl


class PushConfig(ProbeConfig, kw_only=True, frozen=True, forbid_unknown_fields=True):
    unit: str | None = None
    """Unit of the values pushed with ``--value`` (``"s"`` for a ticket's answer time …)."""
    target: str = "pushed"
    """What the pushed records are about, for the record's ``target``."""


class PushProbe(ProbeKind[PushConfig]):
    kind = "push"
    Config = PushConfig
    passive = True

    def target(self, config: PushConfig) -> str:
        return config.target

    async def check(self, config: PushConfig, ctx: CheckContext) -> Observation:
        raise RuntimeError("push checks are not run by the scheduler; use 'probe push'")


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(PushProbe)
