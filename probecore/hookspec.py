"""The plugin contract: every hook probecore calls, in one module.

A plugin is a module or object with functions decorated by :data:`probecore.hookimpl` whose
names are hooks below. Built-in plugins (``probecore_plugins.*``) and third-party plugins (the
``probecore`` entry-point group) are registered the same way and see the same hooks.

Hooks are synchronous. *Registration* hooks receive a registry and add types to it; the objects
they add do the async work. *Event* hooks are called for every record and incident event of a
run, in the order they happen, after they are stored; they must return quickly (hand slow work
to a thread or queue of your own) and must not raise: an exception in an event hook is reported
with the plugin's name and stops the run.

A hook implementation with a misspelled name or an argument the spec does not have is an error
when the plugin is registered (``probe plugins`` shows it), never silently ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._incidents import IncidentEvent
    from ._plugins import Registry
    from ._probe import ProbeKind
    from ._record import SLIRecord
    from ._store import StoreFactory

PROJECT = "probecore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Registration: called once per plugin manager, when the run first needs the registry.
# --------------------------------------------------------------------------------------------

@hookspec
def probecore_add_probes(registry: Registry[type[ProbeKind]]) -> None:
    """Add probe kinds: ``registry.add(MyProbe)``.

    A probe kind is a subclass of :class:`probecore.ProbeKind` with a ``kind`` name (what a
    profile's ``probe = "..."`` names), a ``Config`` struct (the kind's own keys of a
    ``[[check]]`` table; unknown keys are errors) and ``async def check(config, ctx)``.

    A kind whose attempts share something costly to start (the ``browser`` kind's Chromium)
    overrides :meth:`probecore.ProbeKind.lifespan`, an async context manager the scheduler
    enters once per run before the kind's first attempt and exits after its last one, also
    when the run is cancelled; the exit must stop whatever the kind started.

    :param registry: the probe-kind registry of this run. Adding a kind another plugin already
        added is an error naming both plugins.
    """


@hookspec
def probecore_add_evaluators(registry: Registry[type]) -> None:
    """Add objective kinds (``availability``, ``downtime``, ``latency`` …) keyed by name.

    An objective kind is a :class:`probecore.Evaluator` subclass: a ``Config`` (subclass of
    :class:`probecore.ObjectiveConfig`, the ``[[objective]]`` table, checked when the profile
    loads) and ``evaluate(config, ctx) -> Verdict`` over the report's period.

    :param registry: the evaluator registry of this run; ``registry.add(MyEvaluator)`` uses the
        class's ``kind`` attribute as the name.
    """


@hookspec
def probecore_add_notifiers(registry: Registry[type]) -> None:
    """Add notification channels (``console``, ``webhook``, ``email``, ``apprise`` …) keyed by name.

    A channel is a :class:`probecore.Notifier` subclass: a ``Config`` (subclass of
    :class:`probecore.ChannelConfig`, the ``[[channel]]`` table) and ``async send(config,
    notice, ctx)``, which returns once the notice is accepted or raises
    :class:`probecore.DeliveryError`. The core's outbox retries, records and deduplicates.

    :param registry: the notifier registry of this run; ``registry.add(MyNotifier)`` uses the
        class's ``kind`` attribute as the name.
    """


@hookspec
def probecore_add_stores(registry: Registry[StoreFactory]) -> None:
    """Add store back ends keyed by URL scheme (``sqlite``, ``postgresql`` …).

    :param registry: the store registry of this run; ``registry.add(factory, name="sqlite")``
        where ``factory(url: str) -> Store`` opens (creating and migrating if needed) the store
        at *url*. See :class:`probecore.Store` for what a store must do.
    """


# --------------------------------------------------------------------------------------------
# Events: called during ``probe run`` for everything that happens, after it is stored.
# --------------------------------------------------------------------------------------------

@hookspec
def probecore_record(record: SLIRecord) -> None:
    """Called for every SLI record of the run, once it is stored (exporters hook in here).

    :param record: the record, immutable, secrets already removed.
    """


@hookspec
def probecore_event(event: IncidentEvent) -> None:
    """Called for every incident event (suspected, confirmed, resolved, flap), once it is stored.

    Events come from the one incident state machine (:class:`probecore.IncidentTracker`), so
    the events seen live are the events a later replay of the stored records produces.

    :param event: the event, immutable; ``event.event_id`` is stable across replays.
    """
