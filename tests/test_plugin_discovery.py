"""Third-party plugins, the way their authors ship them: a pip-installed distribution with an
entry point in the ``probecore`` group, found by ``probe`` without any configuration.

The distributions are built from source in a temp dir and installed with pip into a target
directory per distribution (once per module); each test runs ``python -m probecore`` with that
directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jsonschema
import pytest

import probecore

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "probecore-{name}"
version = "{version}"
description = "a probecore plugin for the tests"
requires-python = ">=3.11"

[project.entry-points.probecore]
{name} = "probecore_{name}"

[tool.setuptools]
py-modules = ["probecore_{name}"]
'''

HELLO = '''
"""probe = "hello": always ok, value 1."""
import probecore


class HelloConfig(probecore.ProbeConfig):
    greeting: str = "hello"


class HelloProbe(probecore.ProbeKind[HelloConfig]):
    kind = "hello"
    Config = HelloConfig
    unit = "ratio"

    def target(self, config):
        return config.greeting

    async def check(self, config, ctx):
        return probecore.Observation.ok(1.0)


@probecore.hookimpl
def probecore_add_probes(registry):
    registry.add(HelloProbe)
'''

TYPO = '''
"""A decorated hook whose name is misspelled (no trailing s)."""
import probecore


@probecore.hookimpl
def probecore_add_probe(registry):
    pass
'''

UNDECORATED = '''
"""A hook with the right name that its author forgot to decorate."""


def probecore_add_probes(registry):
    pass
'''

NOTARGET = '''
"""A probe kind that does not say what it probes (ProbeKind.target is not overridden)."""
import probecore


class Config(probecore.ProbeConfig):
    pass


class NoTarget(probecore.ProbeKind[Config]):
    kind = "notarget"
    Config = Config

    async def check(self, config, ctx):
        return probecore.Observation.ok(1.0)


@probecore.hookimpl
def probecore_add_probes(registry):
    registry.add(NoTarget)
'''

PLUGINS = {"hello": ("1.2.3", HELLO), "typo": ("0.1", TYPO), "undecorated": ("0.1", UNDECORATED),
           "notarget": ("0.1", NOTARGET)}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build and pip-install each plugin of :data:`PLUGINS` into its own target directory."""
    root = tmp_path_factory.mktemp("plugins")
    jobs = {}
    for name, (version, source) in PLUGINS.items():
        package = root / f"src-{name}"
        package.mkdir()
        (package / "pyproject.toml").write_text(PYPROJECT.format(name=name, version=version))
        (package / f"probecore_{name}.py").write_text(source)
        site = root / f"site-{name}"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                   "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
                   str(package)]
        jobs[name] = (site, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True))
    for name, (_, job) in jobs.items():
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"pip install of probecore-{name} failed:\n{output}"
    return {name: site for name, (site, _) in jobs.items()}


def python_path(site: Path) -> str:
    """*site* in front of whatever PYTHONPATH the test run has."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def probe(args: list[str], *, site: Path, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probecore", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": python_path(site), "COLUMNS": "200", **(env or {})},
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed ``probe``, checked to be exactly one line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("probe: error: ")
    return result.stderr.removeprefix("probe: error: ").rstrip("\n")


HELLO_PROFILE = '''
[profile]
name = "greetings"

[[check]]
id = "greet"
probe = "hello"
greeting = "hi there"
'''


@pytest.fixture
def hello_profile(tmp_path: Path) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(textwrap.dedent(HELLO_PROFILE))
    return path


def assert_valid_records(lines: list[str]) -> list[dict]:
    """Parse JSON Lines of SLI records, each checked against the ``probecore.sli/1`` schema."""
    validator = jsonschema.Draft202012Validator(probecore.record_json_schema())
    records = [json.loads(line) for line in lines if line.strip()]
    for record in records:
        validator.validate(record)
    return records


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


# ---- (a) listing -----------------------------------------------------------------------------

def test_installed_plugin_is_listed_with_its_version_and_hooks(sites: dict[str, Path], tmp_path: Path) -> None:
    plugins = listed(probe(["plugins", "--json"], site=sites["hello"], cwd=tmp_path))
    assert plugins["hello"] == {"name": "hello", "version": "1.2.3",
                                "hooks": ["probecore_add_probes"], "builtin": False,
                                "adds": {"probe kinds": ["hello"]}}
    for name in probecore.BUILTIN_PLUGINS:
        assert plugins[name]["builtin"] is True
        assert plugins[name]["version"] == importlib.metadata.version("probecore")
    assert set(plugins) == {"hello", *probecore.BUILTIN_PLUGINS}


def test_installed_plugin_probe_kind_is_listed(sites: dict[str, Path], tmp_path: Path) -> None:
    result = probe(["plugins"], site=sites["hello"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout and "1.2.3" in result.stdout and "third party" in result.stdout
    kinds = next(line for line in result.stdout.splitlines() if line.startswith("probe kinds: "))
    assert "hello" in kinds.split("·")[0]


# ---- (b) using it --------------------------------------------------------------------------

def test_profile_using_the_plugin_checks_and_runs(sites: dict[str, Path], tmp_path: Path,
                                                  hello_profile: Path) -> None:
    check = probe(["check", hello_profile.name], site=sites["hello"], cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "profile greetings is valid" in check.stdout

    store = f"sqlite:{tmp_path / 's.sqlite3'}"
    run = probe(["run", "--once", "--store", store, hello_profile.name], site=sites["hello"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    printed = assert_valid_records(run.stdout.splitlines())

    records = probe(["records", hello_profile.name, "--store", store], site=sites["hello"], cwd=tmp_path)
    assert records.returncode == 0, records.stderr
    stored = assert_valid_records(records.stdout.splitlines())
    assert stored == printed
    assert len(stored) == 1
    (record,) = stored
    assert (record["check"], record["probe"], record["outcome"], record["value"], record["target"]) == (
        "greetings/greet", "hello", "ok", 1.0, "hi there")


# ---- (c) autoload switched off -------------------------------------------------------------

def test_autoload_can_be_switched_off(sites: dict[str, Path], tmp_path: Path, hello_profile: Path) -> None:
    off = {"PROBECORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    plugins = listed(probe(["plugins", "--json"], site=sites["hello"], cwd=tmp_path, env=off))
    assert set(plugins) == set(probecore.BUILTIN_PLUGINS)

    result = probe(["check", hello_profile.name], site=sites["hello"], cwd=tmp_path, env=off)
    assert result.returncode == 2
    installed = ", ".join(probecore.make_plugin_manager(autoload=False).probes)
    assert one_line_error(result) == (
        f'profile.toml: check "greet": key "probe": unknown probe kind "hello"; installed: {installed}')


# ---- (d) --no-plugin -------------------------------------------------------------------------

def test_no_plugin_blocks_it(sites: dict[str, Path], tmp_path: Path, hello_profile: Path) -> None:
    plugins = listed(probe(["--no-plugin", "hello", "plugins", "--json"], site=sites["hello"], cwd=tmp_path))
    assert "hello" not in plugins
    assert set(plugins) == set(probecore.BUILTIN_PLUGINS)

    table = probe(["--no-plugin", "hello", "plugins"], site=sites["hello"], cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "blocked: hello" in table.stdout.splitlines()

    result = probe(["--no-plugin", "hello", "check", hello_profile.name], site=sites["hello"], cwd=tmp_path)
    assert result.returncode == 2
    assert 'unknown probe kind "hello"' in one_line_error(result)


# ---- (e) (f) plugins that would be silently ignored are refused -------------------------------

def test_misspelled_hook_is_an_error(sites: dict[str, Path], tmp_path: Path) -> None:
    result = probe(["plugins"], site=sites["typo"], cwd=tmp_path)
    assert result.returncode == 2
    message = one_line_error(result)
    assert message.startswith("plugin typo: ")
    assert message == ("plugin typo: probecore_add_probe is not a probecore hook (did you mean "
                       "probecore_add_probes?); the hooks are listed in probecore/hookspec.py")


def test_undecorated_hook_is_an_error(sites: dict[str, Path], tmp_path: Path) -> None:
    result = probe(["plugins"], site=sites["undecorated"], cwd=tmp_path)
    assert result.returncode == 2
    message = one_line_error(result)
    assert "undecorated" in message.split(":")[0]
    assert message.endswith(": probecore_add_probes looks like a hook but is not decorated with "
                            "@probecore.hookimpl")


def test_undecorated_hook_message_names_the_plugin_like_the_others(sites: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    result = probe(["plugins"], site=sites["undecorated"], cwd=tmp_path)
    assert one_line_error(result) == ("plugin undecorated: probecore_add_probes looks like a hook but "
                                      "is not decorated with @probecore.hookimpl")


def test_probe_check_survives_a_plugin_without_target(sites: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "profile.toml").write_text('[profile]\nname = "p"\n\n[[check]]\nid = "c"\nprobe = "notarget"\n')
    result = probe(["check", "profile.toml"], site=sites["notarget"], cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "<notarget: target() raised NotImplementedError>" in result.stdout


# ---- (g) two plugins adding the same probe kind ------------------------------------------------

class _Same(probecore.ProbeKind[probecore.ProbeConfig]):
    kind = "same"
    Config = probecore.ProbeConfig


class _Tcp(probecore.ProbeKind[probecore.ProbeConfig]):
    kind = "tcp"
    Config = probecore.ProbeConfig


def plugin_module(name: str, kind: type) -> types.ModuleType:
    module = types.ModuleType(name)

    @probecore.hookimpl
    def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
        registry.add(kind)

    module.probecore_add_probes = probecore_add_probes  # type: ignore[attr-defined]
    return module


def test_two_plugins_adding_the_same_kind_are_named(tmp_path: Path) -> None:
    host = probecore.make_plugin_manager(builtins=(), autoload=False, extra=[
        plugin_module("probecore_first", _Same), plugin_module("probecore_second", _Same)])
    with pytest.raises(probecore.PluginError) as caught:
        host.probes
    message = str(caught.value)
    assert "\n" not in message
    assert "probecore_first" in message and "probecore_second" in message
    assert "'same'" in message


def test_the_later_plugin_is_blamed_for_a_duplicate_kind() -> None:
    host = probecore.make_plugin_manager(builtins=(), autoload=False, extra=[
        plugin_module("probecore_first", _Same), plugin_module("probecore_second", _Same)])
    with pytest.raises(probecore.PluginError) as caught:
        host.probes
    assert str(caught.value) == ("plugin probecore_second: probe kind 'same' is already added by "
                                 "plugin probecore_first")


def test_a_third_party_cannot_take_a_built_in_kind() -> None:
    host = probecore.make_plugin_manager(autoload=False, extra=[plugin_module("squatter", _Tcp)])
    with pytest.raises(probecore.PluginError) as caught:
        host.probes
    assert str(caught.value) == ("plugin squatter: probe kind 'tcp' is already added by "
                                 "plugin probecore_plugins.tcp")
