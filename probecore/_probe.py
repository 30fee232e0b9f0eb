"""What a probe kind is: a typed config and ``async def check(config, ctx) -> Observation``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import trio

from ._record import Observation
from ._secrets import Secret


class ProbeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every probe kind's ``Config``: the kind's own keys of a ``[[check]]`` table.

    Subclass it with typed fields; the profile loader validates the table against it (unknown
    keys and wrong types are one-line errors naming the key). Use :class:`probecore.Duration`
    for durations and :class:`probecore.Secret` for passwords and tokens.
    """


C = TypeVar("C", bound=ProbeConfig)


class CheckContext:
    """Everything a probe attempt may use besides its config. Created by the scheduler.

    Time phases with ``with ctx.phase("connect"): ...``: completed phases go into the record in
    order, and when the scheduler's timeout cancels the attempt the record still carries the
    phases that finished and names the one that was running.
    """

    def __init__(self, check: str, vantage: str):
        self.check = check
        self.vantage = vantage
        self.phases: dict[str, float] = {}
        self.current_phase: str | None = None
        self._revealed: set[str] = set()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as phase *name* (trio's clock, so tests can mock it)."""
        started = trio.current_time()
        self.current_phase = name
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + (trio.current_time() - started)
        # Left set when the block is cancelled, so a timeout record can name the phase.
        self.current_phase = None

    def reveal(self, secret: Secret) -> str:
        """The value of *secret*; it will be scrubbed from this attempt's record."""
        value = secret.reveal()
        self._revealed.add(value)
        return value

    @property
    def revealed(self) -> frozenset[str]:
        return frozenset(self._revealed)


class ProbeKind(Generic[C]):
    """Base class of probe kinds. Subclass, set ``kind`` and ``Config``, implement ``check``.

    Rules the scheduler relies on: ``check`` never sleeps on the wall clock (use trio's time),
    never catches ``trio.Cancelled`` (timeouts are the scheduler's cancel scopes), and returns an
    :class:`Observation` rather than building an SLI record. An exception that escapes ``check``
    becomes an ``error`` record naming the plugin, and the other checks go on.
    """

    kind: ClassVar[str]
    Config: ClassVar[type[ProbeConfig]]
    unit: ClassVar[str | None] = None
    """Unit of the headline value (``"s"``, ``"ratio"`` …), used when the observation has none."""
    passive: ClassVar[bool] = False
    """``True`` for kinds whose records arrive from outside (``probe push``): the scheduler does
    not run them; the check's ``interval`` is how often evidence is expected."""

    def target(self, config: C) -> str:
        """What is probed, for the record (URL, ``host:port``, mailbox); never a secret."""
        raise NotImplementedError

    def host(self, config: C) -> str | None:
        """The host this check loads, for the scheduler's per-host concurrency limit."""
        return None

    async def check(self, config: C, ctx: CheckContext) -> Observation:
        """Run one attempt and return what was observed."""
        raise NotImplementedError

    @asynccontextmanager
    async def lifespan(self, configs: Sequence[C]) -> AsyncIterator[None]:
        """The kind's life in one run: resources its attempts share (a browser process, a pool).

        The scheduler instantiates each kind once per run and enters this context manager once,
        before the first attempt of the kind, with the configs of the run's checks of this kind;
        it exits it after the last attempt has ended — also when the run is cancelled (SIGINT,
        ``--for``), so the exit must release everything it started, shielding and bounding any
        waiting it needs (``with trio.move_on_after(5) as s: s.shield = True``). The default does
        nothing: most kinds need no lifespan.

        Entering must not fail because a *target* is down or a resource cannot be had yet:
        remember the problem and let ``check`` report it as an ``error`` record, so one broken
        resource does not stop the other checks. An exception that escapes the entry stops the
        run as a plugin error. ``check`` may also be called outside a lifespan (a test, a
        one-off); a kind that needs one then opens it around that single attempt.
        """
        yield

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        config = cls.__dict__.get("Config")
        if config is not None and not (isinstance(config, type) and issubclass(config, ProbeConfig)):
            raise TypeError(f"{cls.__qualname__}.Config must subclass probecore.ProbeConfig")


def describe_target(kind: ProbeKind[Any], config: ProbeConfig) -> str:
    """``kind.target(config)``, or a placeholder naming the failure if the plugin's code raises."""
    try:
        return kind.target(config)
    except Exception as exc:
        return f"<{kind.kind}: target() raised {type(exc).__name__}>"
