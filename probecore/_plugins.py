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
    "probecore_plugins.dns",
    "probecore_plugins.sqlite",
    "probecore_plugins.ftp",
    "probecore_plugins.power",
    "probecore_plugins.mail",
    "probecore_plugins.ping",
    "probecore_plugins.push",
    "probecore_plugins.objectives",
    "probecore_plugins.notifiers",
)
"""Module names of the built-in plugins, registered in this order before any third party."""

ENTRY_POINT_GROUP = "probecore"
AUTOLOAD_ENV = "PROBECORE_DISABLE_PLUGIN_AUTOLOAD"

T = TypeVar("T")


class Registry(Generic[T]):
    """Named things that plugins add through a registration hook (probe kinds, stores …).

    Each name may be added once; a second plugin adding the same name is a :class:`PluginError`
    that names both plugins. Lookups of unknown names raise :class:`UsageError` listing what is
    installed and the closest match.
    """

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        self._plugin = "<unknown plugin>"

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
        self._items[name] = item
        self._owners[name] = self._plugin

    def get(self, name: str) -> T:
        """The item added under *name*, or a :class:`UsageError` naming what exists."""
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._items)
        hint = difflib.get_close_matches(name, known, n=1)
        message = f'unknown {self.what} "{name}"'
        if hint:
            message += f' (did you mean "{hint[0]}"?)'
        return message + f"; installed: {', '.join(known) if known else 'none'}"

    def owner(self, name: str) -> str:
        """The name of the plugin that added *name*."""
        return self._owners[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)


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
                 versions: dict[str, str] | None = None):
        self.pm = pm
        self._builtin = set(builtin_names)
        self._versions = dict(versions or {})
        self._registries: dict[str, Registry[Any]] = {}

    def _registry(self, hook_name: str, what: str) -> Registry[Any]:
        if hook_name not in self._registries:
            registry: Registry[Any] = Registry(what)
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order: a later duplicate is blamed
                registry._plugin = impl.plugin_name
                try:
                    impl.function(registry=registry)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(f"plugin {impl.plugin_name}: {hook_name} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
            registry._plugin = "<unknown plugin>"
            self._registries[hook_name] = registry
        return self._registries[hook_name]

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

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution version and the hooks it implements."""
        registries = {"probe kinds": self.probes, "objective kinds": self.evaluators,
                      "notifiers": self.notifiers, "stores": self.stores}  # fills them: errors show
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            version = self._versions.get(name) or _own_version()
            adds = {what: tuple(item for item in registry if registry.owner(item) == name)
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
    for name in builtin_names:
        if pm.is_blocked(name):
            continue
        try:
            module = import_module(name)
        except ImportError as exc:
            raise PluginError(f"built-in plugin {name} cannot be imported: {exc}") from exc
        _register(pm, module, name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {ep.name} ({ep.value}) cannot be loaded: "
                                  f"{type(exc).__name__}: {exc}") from exc
            _register(pm, plugin, ep.name)
            if ep.dist is not None:
                versions[ep.name] = ep.dist.version
    for plugin in extra:
        _register(pm, plugin, _unique_name(pm, plugin))
    _reject_unknown_hooks(pm)
    return PluginHost(pm, builtin_names, versions)


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
