"""Plugin manager factory, registries, and the typed facade the core calls hooks through.

Built-in plugins are registered by module name from :data:`BUILTIN_PLUGINS` (the only place
the core names a plugin); third-party plugins arrive through the ``probecore`` entry-point
group. Both go through the same ``register()``. There is no module-global manager: every run,
test or CLI command builds its own with :func:`make_plugin_manager`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from . import hookspec
from ._errors import PluginError, UsageError

BUILTIN_PLUGINS: tuple[str, ...] = (
    "probecore_plugins.tcp",
    "probecore_plugins.web",
    "probecore_plugins.browser",
    "probecore_plugins.dns",
    "probecore_plugins.sqlite",
    "probecore_plugins.postgresql",
    "probecore_plugins.ftp",
    "probecore_plugins.power",
    "probecore_plugins.mail",
    "probecore_plugins.ping",
    "probecore_plugins.push",
    "probecore_plugins.objectives",
    "probecore_plugins.notifiers",
)
"""Module names of the built-in plugins, registered in this order before any third party."""

BUILTIN_DEFERRED: dict[str, dict[str, tuple[str, ...]]] = {
    "probecore_plugins.web": {"probecore_add_probes": ("web",)},
    "probecore_plugins.browser": {"probecore_add_probes": ("browser",)},
    "probecore_plugins.dns": {"probecore_add_probes": ("dns",)},
    "probecore_plugins.ftp": {"probecore_add_probes": ("ftp",)},
    "probecore_plugins.power": {"probecore_add_probes": ("power",)},
    "probecore_plugins.mail": {"probecore_add_probes": ("mail",)},
    "probecore_plugins.ping": {"probecore_add_probes": ("ping",)},
    "probecore_plugins.notifiers": {"probecore_add_notifiers": ("apprise", "console", "email", "webhook")},
}
"""Built-in plugins that only add these names (per registration hook): each is imported, with
its client libraries, the first time something names one of them (a profile's probe kind or
channel kind) or lists them all, so that `probe run --once` of one tcp check does not pay for
dnspython, aioftp, h11 and smtplib. A test checks each entry against what the module adds."""

KINDS_ENTRY_POINT_GROUP = "probecore.probe_kinds"
"""Optional entry-point metadata for third-party plugins that only add probe kinds: an entry
``KIND = "PLUGIN"`` in this group says the plugin whose entry point in the ``probecore`` group is
named PLUGIN adds the probe kind KIND, and such a plugin is loaded on first use of one of its kinds
(its ``probecore`` entry point is still where it is loaded from). A plugin declared this way must
implement no hook but ``probecore_add_probes``."""

ENTRY_POINT_GROUP = "probecore"
AUTOLOAD_ENV = "PROBECORE_DISABLE_PLUGIN_AUTOLOAD"

T = TypeVar("T")

Deferral = tuple[Callable[[], object], dict[str, tuple[str, ...]]]
"""How to import a plugin whose loading waits for first use, and what it adds per hook."""


class Registry(Generic[T]):
    """Named things that plugins add through a registration hook (probe kinds, stores …).

    Each name may be added once; a second plugin adding the same name is a :class:`PluginError`
    that names both plugins. Lookups of unknown names raise :class:`UsageError` listing what is
    installed and the closest match.
    """

    def __init__(self, what: str, deferred: _Deferred | None = None, hook_name: str = ""):
        self.what = what
        self._hook_name = hook_name
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        self._plugin = "<unknown plugin>"
        # Names that plugins not imported yet will add; a miss loads the one that adds it.
        self._deferred = deferred

    def add(self, item: T, *, name: str | None = None) -> None:
        """Add *item* under *name* (default: the item's ``kind`` attribute)."""
        if name is None:
            name = getattr(item, "kind", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self._plugin}: {self.what} {item!r} has no name "
                              "(set a 'kind' attribute or pass name=)")
        if name in self._items:
            raise PluginError(f"plugin {self._plugin}: {self.what} {name!r} is already added "
                              f"by plugin {self._owners[name]}")
        owner = self._deferred.owner_of(self._hook_name, name) if self._deferred is not None else None
        if owner is not None and owner != self._plugin:
            raise PluginError(f"plugin {self._plugin}: {self.what} {name!r} is already added "
                              f"by plugin {owner}")
        self._items[name] = item
        self._owners[name] = self._plugin

    def _resolve(self, name: str) -> bool:
        """Load the deferred plugin that adds *name*, if any; whether *name* is now known."""
        if name not in self._items and self._deferred is not None:
            self._deferred.load_for(self._hook_name, name)
        return name in self._items

    def _complete(self) -> dict[str, T]:
        """Every item, after loading every deferred plugin (for listings and suggestions)."""
        if self._deferred is not None:
            self._deferred.load_all()
        return self._items

    def get(self, name: str) -> T:
        """The item added under *name*, or a :class:`UsageError` naming what exists."""
        if self._resolve(name):
            return self._items[name]
        raise UsageError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        known = sorted(self._complete())
        hint = difflib.get_close_matches(name, known, n=1)
        message = f'unknown {self.what} "{name}"'
        if hint:
            message += f' (did you mean "{hint[0]}"?)'
        return message + f"; installed: {', '.join(known) if known else 'none'}"

    def owner(self, name: str) -> str:
        """The name of the plugin that added *name*."""
        self._resolve(name)
        return self._owners[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._complete()))

    def __len__(self) -> int:
        return len(self._complete())


class _Deferred:
    """Plugins that only add names to registries, registered on first use of one of the names.

    Loading one registers it with the plugin manager exactly as an eager plugin is registered
    and runs its registration hooks into the registries already built, so duplicates are
    blamed the same way and ``probe plugins`` shows it like any other once loaded.
    """

    def __init__(self, host: PluginHost, plugins: dict[str, Deferral]):
        self._host = host
        self._pending = dict(plugins)  # plugin name -> (loader, {hook name: names it adds})

    def owner_of(self, hook_name: str, item: str) -> str | None:
        return next((name for name, (_, adds) in self._pending.items() if item in adds.get(hook_name, ())),
                    None)

    def load_for(self, hook_name: str, item: str) -> None:
        owner = self.owner_of(hook_name, item)
        if owner is not None:
            self._load(owner)

    def load_all(self) -> None:
        for name in list(self._pending):
            self._load(name)

    def _load(self, name: str) -> None:
        loader, _ = self._pending.pop(name)
        plugin = loader()
        _register(self._host.pm, plugin, name)
        _reject_unknown_hooks(self._host.pm)
        for hook_name, registry in self._host._registries.items():
            for impl in getattr(self._host.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == name:
                    self._host._call_registration(impl, hook_name, registry)


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, as ``probe plugins`` lists it."""

    name: str
    version: str
    hooks: tuple[str, ...]
    builtin: bool
    adds: dict[str, tuple[str, ...]]
    """What it added to each registry: ``{"probe kinds": ("tcp",), "stores": ()}``."""


class PluginHost:
    """A run's plugin manager behind a typed facade; core code never calls ``pm.hook`` itself.

    Registries are filled on first use by calling each plugin's registration hook separately,
    so that a duplicate name can be blamed on the plugin that added it.
    """

    def __init__(self, pm: pluggy.PluginManager, builtin_names: Iterable[str] = (),
                 versions: dict[str, str] | None = None,
                 deferred: dict[str, Deferral] | None = None):
        self.pm = pm
        self._builtin = set(builtin_names)
        self._versions = dict(versions or {})
        self._registries: dict[str, Registry[Any]] = {}
        self._deferred = _Deferred(self, deferred or {})

    def _registry(self, hook_name: str, what: str) -> Registry[Any]:
        if hook_name not in self._registries:
            registry: Registry[Any] = Registry(what, self._deferred, hook_name)
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order: a later duplicate is blamed
                self._call_registration(impl, hook_name, registry)
            self._registries[hook_name] = registry
        return self._registries[hook_name]

    @staticmethod
    def _call_registration(impl: Any, hook_name: str, registry: Registry[Any]) -> None:
        registry._plugin = impl.plugin_name
        try:
            impl.function(registry=registry)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name}: {hook_name} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        finally:
            registry._plugin = "<unknown plugin>"

    def load_all(self) -> None:
        """Import every plugin whose loading was deferred until its probe kind is used."""
        self._deferred.load_all()

    @property
    def probes(self) -> Registry[Any]:
        return self._registry("probecore_add_probes", "probe kind")

    @property
    def evaluators(self) -> Registry[Any]:
        return self._registry("probecore_add_evaluators", "objective kind")

    @property
    def notifiers(self) -> Registry[Any]:
        return self._registry("probecore_add_notifiers", "notifier")

    @property
    def stores(self) -> Registry[Any]:
        return self._registry("probecore_add_stores", "store scheme")

    def record(self, record: Any) -> None:
        self.pm.hook.probecore_record(record=record)

    def event(self, event: Any) -> None:
        self.pm.hook.probecore_event(event=event)

    def plugins(self, *, loaded_only: bool = False) -> list[PluginInfo]:
        """Every registered plugin with its distribution version and the hooks it implements.

        :param loaded_only: leave out the plugins whose loading is still deferred (nothing in
            this run used their probe kinds) instead of importing them.
        """
        if not loaded_only:
            self.load_all()
        registries = {"probe kinds": self.probes, "objective kinds": self.evaluators,
                      "notifiers": self.notifiers, "stores": self.stores}  # fills them: errors show
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            version = self._versions.get(name) or _own_version()
            adds = {what: tuple(sorted(item for item, owner in registry._owners.items() if owner == name))
                    for what, registry in registries.items()}
            infos.append(PluginInfo(name, version, hooks, name in self._builtin,
                                    {what: items for what, items in adds.items() if items}))
        return infos

    def blocked(self) -> list[str]:
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is None]


def _own_version() -> str:
    try:
        return importlib.metadata.version("probecore")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def make_plugin_manager(
    *,
    builtins: Iterable[str] = BUILTIN_PLUGINS,
    autoload: bool | None = None,
    blocked: Iterable[str] = (),
    extra: Iterable[object] = (),
    import_module: Callable[[str], object] = importlib.import_module,
) -> PluginHost:
    """Build the plugin manager of one run.

    :param builtins: module names of the built-in plugins to register.
    :param autoload: load third-party plugins from the ``probecore`` entry points; default is
        on unless ``PROBECORE_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value.
    :param blocked: plugin names (built-in module names or entry-point names) never to register,
        as ``probe --no-plugin NAME`` says.
    :param extra: plugin objects to register after the others (tests, benchmarks).
    """
    pm = pluggy.PluginManager(hookspec.PROJECT)
    pm.add_hookspecs(hookspec)
    for name in blocked:
        pm.set_blocked(name)
    builtin_names = list(builtins)
    versions: dict[str, str] = {}
    deferred: dict[str, Deferral] = {}

    def import_builtin(name: str) -> object:
        try:
            return import_module(name)
        except ImportError as exc:
            raise PluginError(f"built-in plugin {name} cannot be imported: {exc}") from exc

    for name in builtin_names:
        if pm.is_blocked(name):
            continue
        if name in BUILTIN_DEFERRED and import_module is importlib.import_module:
            deferred[name] = (lambda name=name: import_builtin(name), BUILTIN_DEFERRED[name])
            continue
        _register(pm, import_builtin(name), name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        kinds_of: dict[str, list[str]] = {}
        for kind_ep in importlib.metadata.entry_points(group=KINDS_ENTRY_POINT_GROUP):
            kinds_of.setdefault(kind_ep.value.strip(), []).append(kind_ep.name)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name) or ep.name in deferred:
                continue
            if ep.dist is not None:
                versions[ep.name] = ep.dist.version
            if ep.name in kinds_of:
                deferred[ep.name] = (lambda ep=ep: _load_entry_point(ep),
                                     {"probecore_add_probes": tuple(kinds_of[ep.name])})
                continue
            _register(pm, _load_entry_point(ep), ep.name)
    for plugin in extra:
        _register(pm, plugin, _unique_name(pm, plugin))
    _reject_unknown_hooks(pm)
    return PluginHost(pm, builtin_names, versions, deferred)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(f"plugin {ep.name} ({ep.value}) cannot be loaded: "
                          f"{type(exc).__name__}: {exc}") from exc


def _unique_name(pm: pluggy.PluginManager, plugin: object) -> str:
    base = getattr(plugin, "__name__", None) or type(plugin).__name__
    name, n = base, 1
    while pm.has_plugin(name) or pm.is_blocked(name):
        n += 1
        name = f"{base}-{n}"
    return name


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    _reject_undecorated_hooks(plugin, name)
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name or repr(plugin)}: {_first_line(exc)}") from exc
    except ValueError as exc:  # same name twice
        raise PluginError(f"plugin {name or repr(plugin)}: {exc}") from exc


def _reject_unknown_hooks(pm: pluggy.PluginManager) -> None:
    """A decorated function whose name is no hook (a typo) would never be called: refuse it."""
    known = [name for name in dir(hookspec) if name.startswith("probecore_")]
    for name in sorted(vars(pm.hook)):
        caller = getattr(pm.hook, name)
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            raise PluginError(f"plugin {impl.plugin_name}: {name} is not a probecore hook"
                              + (f" (did you mean {hint[0]}?)" if hint else "")
                              + "; the hooks are listed in probecore/hookspec.py")


def _reject_undecorated_hooks(plugin: object, name: str | None) -> None:
    """A ``probecore_*`` function without ``@hookimpl`` would be ignored silently: refuse it."""
    for attr in dir(plugin):
        if not attr.startswith("probecore_"):
            continue
        value = getattr(plugin, attr, None)
        if callable(value) and not hasattr(value, hookspec.PROJECT + "_impl"):
            raise PluginError(f"plugin {name or repr(plugin)}: {attr} looks like a hook but is not "
                              "decorated with @probecore.hookimpl")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
