"""A scripted probe kind for unit tests of the scheduler and pipeline (a fake at the seam)."""

from __future__ import annotations

from collections import Counter

import trio

import probecore
from probecore import CheckContext, Duration, Observation, ProbeConfig, ProbeKind


class ScriptedConfig(ProbeConfig):
    fail_first: int = 0            # the first N attempts fail (provider), then ok
    fail_always: bool = False
    raise_error: bool = False      # raise ValueError (a plugin bug)
    sleep: Duration | None = None  # take this long (trio time) inside phase "work"
    shielded: bool = False         # ignore cancellation while sleeping (a misbehaving probe)
    host: str | None = None
    secret: probecore.Secret | None = None
    wrong_return: bool = False
    code: str = "scripted_failure"
    attribution: str = "provider"
    details: dict[str, str] = {}
    members: list[str] = []           # check these members (a round), failing those below
    failing_members: list[str] = []
    error_members: list[str] = []


class ScriptedProbe(ProbeKind[ScriptedConfig]):
    kind = "scripted"
    Config = ScriptedConfig
    unit = "s"

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def target(self, config: ScriptedConfig) -> str:
        return f"scripted://{config.host or 'nowhere'}"

    def host(self, config: ScriptedConfig) -> str | None:
        return config.host

    async def check(self, config: ScriptedConfig, ctx: CheckContext) -> Observation:
        self.attempts[ctx.check] += 1
        number = self.attempts[ctx.check]
        if config.sleep:
            with ctx.phase("work"):
                if config.shielded:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(config.sleep)
                else:
                    await trio.sleep(config.sleep)
        if config.members:
            return Observation.ok(details={"round": number}, members=[
                Observation.fail("member_down", f"{name} is down", member=name)
                if name in config.failing_members else
                Observation.error("member_unknown", f"{name} could not be judged", member=name)
                if name in config.error_members else
                Observation.ok(0.5, member=name, phases={"reach": 0.5})
                for name in config.members])
        if config.raise_error:
            raise ValueError("scripted crash")
        if config.wrong_return:
            return "not an observation"  # type: ignore[return-value]
        if config.secret is not None:
            value = ctx.reveal(config.secret)
            return Observation.fail("auth_rejected", f"server said: bad password {value}",
                                    attribution="customer", details={"echo": value})
        if config.fail_always or number <= config.fail_first:
            return Observation.fail(config.code, f"attempt {number} fails", details=dict(config.details),
                                    attribution=config.attribution)  # type: ignore[arg-type]
        return Observation.ok(0.001 * number)


class ScriptedPlugin:
    @probecore.hookimpl
    def probecore_add_probes(self, registry):  # type: ignore[no-untyped-def]
        registry.add(ScriptedProbe)
