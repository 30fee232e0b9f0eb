"""Plugins that only add names are imported when a profile first names one of them.

`probe run --once` of one tcp check must not import dnspython, aioftp, h11 or smtplib (issue 18:
start-up is most of a CI gate's time); listing plugins or kinds loads everything, and a
duplicate name is still blamed on the plugin that adds it second, loaded or not.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

import probecore
from probecore import hookspec
from probecore._plugins import BUILTIN_DEFERRED, make_plugin_manager
from probecore.testing import make_host, write_profile

HEAVY = ("dns", "aioftp", "h11", "smtplib", "imaplib", "poplib", "pysnmp", "apprise", "rich")


@pytest.mark.parametrize("module", sorted(BUILTIN_DEFERRED))
def test_deferred_metadata_is_what_the_module_adds(module: str) -> None:
    """The declared names are exactly what the module's hooks add, and it implements no other hook
    (a deferred plugin's record/event hooks would miss what happened before it was loaded)."""
    plugin = importlib.import_module(module)
    pm = pluggy.PluginManager(hookspec.PROJECT)
    pm.add_hookspecs(hookspec)
    pm.register(plugin, name=module)
    implemented = {caller.name for caller in pm.get_hookcallers(plugin)}
    assert implemented == set(BUILTIN_DEFERRED[module])
    for hook_name, names in BUILTIN_DEFERRED[module].items():
        added: list[str] = []

        class Collect:
            def add(self, item: object, *, name: str | None = None) -> None:
                added.append(name or item.kind)  # type: ignore[attr-defined]

        getattr(plugin, hook_name)(registry=Collect())
        assert sorted(added) == sorted(names)


def imported_modules_after(args: list[str], tmp_path: Path) -> set[str]:
    """Top-level module names imported by ``probe ARGS`` in a fresh interpreter."""
    code = ("import sys, json\nfrom probecore._cli import main\nstatus = main(sys.argv[1:])\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n")
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


TCP_PROFILE = """
[profile]
name = "gate"

[[check]]
id = "port"
probe = "tcp"
host = "127.0.0.1"
port = 9
timeout = "1s"
"""


def test_run_once_of_a_tcp_check_imports_no_other_probe_library(tmp_path: Path) -> None:
    path = write_profile(tmp_path, TCP_PROFILE)
    modules = imported_modules_after(["run", str(path), "--once", "--json"], tmp_path)
    assert "probecore_plugins" in modules
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_a_profile_naming_a_kind_loads_its_plugin(tmp_path: Path) -> None:
    path = write_profile(tmp_path, TCP_PROFILE + '\n[[check]]\nid = "name"\nprobe = "dns"\n'
                         'name = "example.test"\nserver = "127.0.0.1"\n')
    modules = imported_modules_after(["check", str(path)], tmp_path)
    assert "dns" in modules
    assert "aioftp" not in modules


def test_listing_kinds_loads_everything() -> None:
    host = make_plugin_manager(autoload=False)
    assert {"web", "dns", "ftp", "power", "mail", "ping", "tcp", "push"} <= set(host.probes)
    assert {"console", "email", "webhook"} <= set(host.notifiers)
    listed = {info.name for info in host.plugins()}
    assert set(BUILTIN_DEFERRED) <= listed


def test_unknown_kind_suggests_a_deferred_one() -> None:
    host = make_plugin_manager(autoload=False)
    with pytest.raises(probecore.UsageError, match='unknown probe kind "dsn" \\(did you mean "dns"\\?\\)'):
        host.probes.get("dsn")


def test_a_third_party_adding_a_deferred_builtins_kind_is_blamed() -> None:
    class Impostor:
        __name__ = "impostor"

        class Probe(probecore.ProbeKind[probecore.ProbeConfig]):
            kind = "dns"
            Config = probecore.ProbeConfig

        @staticmethod
        @probecore.hookimpl
        def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
            registry.add(Impostor.Probe)

    host = make_plugin_manager(autoload=False, extra=[Impostor()])
    with pytest.raises(probecore.PluginError,
                       match="probe kind 'dns' is already added by plugin probecore_plugins.dns"):
        host.probes.get("tcp")


def test_blocked_deferred_plugin_stays_out() -> None:
    host = make_plugin_manager(autoload=False, blocked=["probecore_plugins.dns"])
    assert "dns" not in host.probes
    assert "probecore_plugins.dns" not in {info.name for info in host.plugins()}


LAZY_PLUGIN = '''
import pathlib, probecore
pathlib.Path(__file__).with_name("imported").write_text("yes")


class Config(probecore.ProbeConfig):
    pass


class Lazy(probecore.ProbeKind[Config]):
    kind = "lazy"
    Config = Config

    def target(self, config):
        return "lazy"

    async def check(self, config, ctx):
        return probecore.Observation.ok(1.0)


@probecore.hookimpl
def probecore_add_probes(registry):
    registry.add(Lazy)
'''


def test_third_party_kinds_metadata_defers_the_import(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "probecore_lazy.py").write_text(LAZY_PLUGIN, encoding="utf-8")
    dist = site / "probecore_lazy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: probecore-lazy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[probecore]\nlazy = probecore_lazy\n\n[probecore.probe_kinds]\nlazy = lazy\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PROBECORE_DATA_DIR": str(tmp_path / "data")}

    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "probecore", *args], capture_output=True, text=True,
                              env=env, timeout=60, cwd=tmp_path)

    tcp = write_profile(tmp_path, TCP_PROFILE)
    assert probe("check", str(tcp)).returncode == 0
    assert not (site / "imported").exists()

    uses = tmp_path / "uses.toml"
    uses.write_text('[profile]\nname = "l"\n[[check]]\nid = "x"\nprobe = "lazy"\n')
    result = probe("run", str(uses), "--once", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["outcome"] == "ok"
    assert (site / "imported").exists()
    listed = json.loads(probe("plugins", "--json").stdout)
    assert {p["name"]: p["version"] for p in listed}["lazy"] == "0.1"


def test_make_host_with_named_builtins_still_works() -> None:
    host = make_host(builtins=("probecore_plugins.tcp", "probecore_plugins.dns"))
    assert set(host.probes) == {"tcp", "dns"}
