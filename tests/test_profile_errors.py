"""What a user sees for a malformed profile: one line naming the file, the table, the key and
the problem (``<file>: <table>: key "<key>": <problem>``), never a traceback.

:data:`CASES` is the documentation: each row is a profile as a user might get it wrong and the
exact message ``load_profile`` raises for it. The same messages come out of ``probe check``.

The rows use a host with the built-in ``tcp`` probe kind and a small third-party-style kind
``vault`` (:data:`VAULT_PLUGIN`) whose config has a :class:`probecore.Secret` and a
:class:`probecore.Duration`, so that the "installed:" list in messages stays the same when more
built-in plugins arrive.
"""

from __future__ import annotations

import importlib
import os
import secrets
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import probecore
from probecore.testing import make_host

# ---- the probe kinds the table is checked against -------------------------------------------

VAULT_PLUGIN = '''
"""probe = "vault": a probe kind with a password, as a third-party author would write one."""
import probecore


class VaultConfig(probecore.ProbeConfig):
    url: str
    password: probecore.Secret
    timeout_x: probecore.Duration | None = None


class VaultProbe(probecore.ProbeKind[VaultConfig]):
    kind = "vault"
    Config = VaultConfig

    def target(self, config):
        return config.url

    async def check(self, config, ctx):
        password = ctx.reveal(config.password)
        # A careless plugin that echoes the password: the record must not carry it.
        return probecore.Observation.ok(1.0, details={"echo": f"logged in with {password}"})


@probecore.hookimpl
def probecore_add_probes(registry):
    registry.add(VaultProbe)
'''

vault_plugin = types.ModuleType("probecore_vault")
exec(compile(VAULT_PLUGIN, "probecore_vault.py", "exec", dont_inherit=True), vault_plugin.__dict__)

ONLY_TCP = ("probecore_plugins.tcp",)
"""The built-ins the table assumes; the CLI tests block every other built-in probe plugin."""


@pytest.fixture(scope="module")
def host() -> probecore.PluginHost:
    return make_host(vault_plugin, builtins=ONLY_TCP)


# ---- the table --------------------------------------------------------------------------------

NOT_UTF8 = '[profile]\nname = "caf\xe9"\n'.encode("latin-1")


def case(ident: str, text: str | bytes | None, message: str) -> Any:
    """One row: *text* is the file's content (``bytes`` written as is, ``None``: no file)."""
    if isinstance(text, str):
        text = textwrap.dedent(text).lstrip()
    return pytest.param(text, message, id=ident)


CASES = [
    # ---- the file itself ----
    case("missing-file", None,
         "profile.toml: no such file"),
    case("not-utf-8", NOT_UTF8,
         "profile.toml: not UTF-8 text"),
    case("invalid-toml-unclosed-string", '''
        [profile]
        name = "acme
        ''',
         "profile.toml: invalid TOML: Illegal character '\\n' (at line 2, column 13)"),
    case("invalid-toml-key-twice", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        port = 2222
        ''',
         "profile.toml: invalid TOML: Cannot overwrite a value (at line 9, column 12)"),
    # ---- top level ----
    case("unknown-table", '''
        [profile]
        name = "acme"

        [default]
        interval = "1m"
        ''',
         "profile.toml: unknown table [default]; expected one of profile, defaults, check, "
         "objective, maintenance, channel, notify"),
    case("missing-profile", '''
        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        ''',
         "profile.toml: missing table [profile]"),
    case("defaults-not-a-table", '''
        defaults = "1m"

        [profile]
        name = "acme"
        ''',
         'profile.toml: [defaults]: expected a table, got "1m"'),
    case("no-check", '''
        [profile]
        name = "acme"
        ''',
         "profile.toml: no [[check]] tables; a profile needs at least one check"),
    case("check-as-single-table", '''
        [profile]
        name = "acme"

        [check]
        id = "ssh"
        ''',
         "profile.toml: expected [[check]] tables (an array of tables), got [check]"),
    # ---- [profile] ----
    case("profile-without-name", '''
        [profile]
        contract = "001"
        ''',
         'profile.toml: [profile]: key "name": required key is missing'),
    case("profile-name-with-capitals-and-space", '''
        [profile]
        name = "Acme Hosting"
        ''',
         'profile.toml: [profile]: key "name": expected a lower-case name of letters, digits, '
         '".", "_" or "-", got "Acme Hosting"'),
    case("unknown-time-zone", '''
        [profile]
        name = "acme"
        timezone = "Asia/Beijing"
        ''',
         'profile.toml: [profile]: key "timezone": unknown time zone "Asia/Beijing" '
         '(expected an IANA name like "Asia/Shanghai")'),
    case("fee-negative", '''
        [profile]
        name = "acme"
        fee = { monthly = -300, currency = "CNY" }
        ''',
         'profile.toml: [profile]: key "fee.monthly": expected a non-negative number, got -300'),
    case("fee-not-a-number", '''
        [profile]
        name = "acme"
        fee = { monthly = "300 CNY", currency = "CNY" }
        ''',
         'profile.toml: [profile]: key "fee.monthly": expected a non-negative number, got "300 CNY"'),
    case("fee-not-a-real-number", '''
        [profile]
        name = "acme"
        fee = { monthly = nan, currency = "CNY" }
        ''',
         'profile.toml: [profile]: key "fee.monthly": expected a non-negative number, got nan'),
    case("fee-without-monthly", '''
        [profile]
        name = "acme"
        fee = { currency = "CNY" }
        ''',
         'profile.toml: [profile]: key "fee.monthly": required key is missing'),
    case("fee-without-currency", '''
        [profile]
        name = "acme"
        fee = { monthly = 300 }
        ''',
         'profile.toml: [profile]: key "fee.currency": required key is missing'),
    case("unknown-profile-key", '''
        [profile]
        name = "acme"
        owner = "ops"
        ''',
         'profile.toml: [profile]: key "owner": unknown key; expected one of name, contract, '
         "timezone, fee, description"),
    # ---- [defaults] ----
    case("unknown-defaults-key", '''
        [profile]
        name = "acme"

        [defaults]
        intervall = "1m"
        ''',
         'profile.toml: [defaults]: key "intervall": unknown key; expected one of interval, '
         "timeout, retry_interval, confirm, labels, vantages, quorum"),
    case("defaults-confirm-zero", '''
        [profile]
        name = "acme"

        [defaults]
        confirm = 0
        ''',
         'profile.toml: [defaults]: key "confirm": expected a whole number from 1 to 1000, got 0'),
    # ---- [[check]]: id and probe ----
    case("check-without-id", '''
        [profile]
        name = "acme"

        [[check]]
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        ''',
         'profile.toml: check #1: key "id": required key is missing'),
    case("check-id-with-space", '''
        [profile]
        name = "acme"

        [[check]]
        id = "SSH port"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        ''',
         'profile.toml: check #1: key "id": expected a lower-case id of letters, digits, ".", "_" '
         'or "-", got "SSH port"'),
    case("duplicate-check-ids", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 2222
        ''',
         'profile.toml: check #2: key "id": the id "ssh" is used by an earlier check'),
    case("check-without-probe", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        host = "127.0.0.1"
        port = 22
        ''',
         'profile.toml: check "ssh": key "probe": required key is missing'),
    case("unknown-probe-kind", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcpp"
        host = "127.0.0.1"
        port = 22
        ''',
         'profile.toml: check "ssh": key "probe": unknown probe kind "tcpp" (did you mean "tcp"?); '
         "installed: tcp, vault"),
    # ---- [[check]]: the probe kind's own keys ----
    case("tcp-without-port", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        ''',
         'profile.toml: check "ssh": key "port": required key is missing'),
    case("port-as-string", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = "22"
        ''',
         'profile.toml: check "ssh": key "port": expected a whole number, got "22"'),
    case("port-zero", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 0
        ''',
         'profile.toml: check "ssh": key "port": expected a whole number from 1 to 65535, got 0'),
    case("port-too-large", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 70000
        ''',
         'profile.toml: check "ssh": key "port": expected a whole number from 1 to 65535, got 70000'),
    case("host-empty", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = ""
        port = 22
        ''',
         'profile.toml: check "ssh": key "host": expected a non-empty string, got ""'),
    case("unknown-tcp-key", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        banner = "SSH-2.0"
        ''',
         'profile.toml: check "ssh": key "banner": unknown key; expected one of host, port, send, '
         "expect, read_limit"),
    case("secret-as-literal", '''
        [profile]
        name = "acme"

        [[check]]
        id = "vault"
        probe = "vault"
        url = "https://vault.example.cn/"
        password = "hunter2"
        ''',
         'profile.toml: check "vault": key "password": expected a secret reference { env = "NAME" } '
         'or { file = "path" }, not a literal string (secrets never live in profiles)'),
    case("secret-unknown-source", '''
        [profile]
        name = "acme"

        [[check]]
        id = "vault"
        probe = "vault"
        url = "https://vault.example.cn/"
        password = { environment = "VAULT_PASSWORD" }
        ''',
         'profile.toml: check "vault": key "password": expected a secret reference '
         '{ env = "NAME" } or { file = "path" }'),
    case("plugin-duration-in-words", '''
        [profile]
        name = "acme"

        [[check]]
        id = "vault"
        probe = "vault"
        url = "https://vault.example.cn/"
        password = { env = "VAULT_PASSWORD" }
        timeout_x = "5 sec"
        ''',
         'profile.toml: check "vault": key "timeout_x": expected a duration like "90s", "5m" or '
         '"1h", got "5 sec"'),
    # ---- [[check]]: timing, confirm, labels ----
    case("duration-in-words", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "5 minutes"
        ''',
         'profile.toml: check "ssh": key "interval": expected a duration like "90s", "5m" or "1h", '
         'got "5 minutes"'),
    case("duration-without-unit", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        timeout = 10
        ''',
         'profile.toml: check "ssh": key "timeout": expected a duration like "90s", "5m" or "1h", '
         "got 10"),
    case("duration-zero", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "0s"
        ''',
         'profile.toml: check "ssh": key "interval": expected a duration longer than zero, got "0s"'),
    case("timeout-longer-than-interval", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "30s"
        timeout = "1m"
        ''',
         'profile.toml: check "ssh": key "timeout": 1m is longer than the interval 30s'),
    case("interval-shorter-than-default-timeout", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "5s"
        ''',
         'profile.toml: check "ssh": key "interval": 5s is shorter than the timeout 10s'),
    case("retry-interval-longer-than-interval", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "30s"
        timeout = "5s"
        retry_interval = "1m"
        ''',
         'profile.toml: check "ssh": key "retry_interval": 1m is longer than the interval 30s'),
    case("defaults-retry-interval-longer-than-check-interval", '''
        [profile]
        name = "acme"

        [defaults]
        retry_interval = "1m"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        interval = "30s"
        timeout = "5s"
        ''',
         'profile.toml: check "ssh": key "interval": 30s is shorter than the retry_interval 1m set in '
         '[defaults]; give this check its own retry_interval'),
    case("toml-nested-too-deeply",
         '[profile]\nname = "acme"\n[[check]]\nid = "ssh"\nprobe = "tcp"\nhost = "h"\nport = 22\n'
         'labels = ' + "[" * 5000 + "]" * 5000 + "\n",
         "profile.toml: invalid TOML: arrays or tables nested too deeply"),
    case("confirm-zero", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        confirm = 0
        ''',
         'profile.toml: check "ssh": key "confirm": expected a whole number from 1 to 1000, got 0'),
    case("confirm-as-string", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        confirm = "2"
        ''',
         'profile.toml: check "ssh": key "confirm": expected a whole number from 1 to 1000, got "2"'),
    case("confirm-as-boolean", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        confirm = true
        ''',
         'profile.toml: check "ssh": key "confirm": expected a whole number from 1 to 1000, got true'),
    case("labels-not-strings", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22
        labels = { team = "ops", tier = 1 }
        ''',
         'profile.toml: check "ssh": key "labels": expected a table of strings, like { team = "web" }'),
    # ---- [[objective]] ----
    case("objective-names-missing-check", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[objective]]
        id = "001-W"
        kind = "availability"
        check = "site"
        op = ">="
        target = 0.99
        ''',
         'profile.toml: objective "001-W": key "check": no check "site" in this profile'),
    case("objective-bad-operator", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[objective]]
        id = "001-W"
        kind = "availability"
        check = "ssh"
        op = "=>"
        target = 0.99
        ''',
         'profile.toml: objective "001-W": key "op": expected one of <, <=, >=, >, got "=>"'),
    case("objective-without-kind", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[objective]]
        id = "001-W"
        check = "ssh"
        op = ">="
        target = 0.99
        ''',
         'profile.toml: objective "001-W": key "kind": required key is missing'),
    case("objective-target-as-percent", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[objective]]
        id = "001-W"
        kind = "availability"
        check = "ssh"
        op = ">="
        target = "99%"
        ''',
         'profile.toml: objective "001-W": key "target": expected a number, got "99%"'),
    case("duplicate-objective-ids", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[objective]]
        id = "001-W"
        kind = "availability"
        check = "ssh"

        [[objective]]
        id = "001-W"
        kind = "latency"
        check = "ssh"
        ''',
         'profile.toml: objective "001-W": key "id": the id "001-W" is used twice'),
    # ---- [[maintenance]] ----
    case("maintenance-ends-before-start", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[maintenance]]
        start = 2026-11-01T02:00:00+08:00
        end = 2026-11-01T01:00:00+08:00
        ''',
         'profile.toml: maintenance #1: key "end": ends at or before its start '
         "(2026-11-01 02:00:00+08:00)"),
    case("maintenance-naive-date-time", '''
        [profile]
        name = "acme"

        [[check]]
        id = "ssh"
        probe = "tcp"
        host = "127.0.0.1"
        port = 22

        [[maintenance]]
        start = 2026-11-01T02:00:00
        end = 2026-11-01T04:00:00+08:00
        ''',
         'profile.toml: maintenance #1: key "start": expected a date-time with a UTC offset, '
         "like 2026-11-01T02:00:00+08:00"),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_malformed_profile(text: str | bytes | None, message: str, host: probecore.PluginHost,
                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "profile.toml", text)
    with pytest.raises(probecore.ProfileError) as caught:
        probecore.load_profile("profile.toml", host.probes)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def write(path: Path, text: str | bytes | None) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text, encoding="utf-8")


# ---- the same messages from the command line -------------------------------------------------

@pytest.fixture(scope="module")
def vault_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that, on PYTHONPATH, installs :data:`VAULT_PLUGIN` as an entry point."""
    site = tmp_path_factory.mktemp("vault-site")
    (site / "probecore_vault.py").write_text(VAULT_PLUGIN, encoding="utf-8")
    dist = site / "probecore_vault-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: probecore-vault\nVersion: 0.1\n",
                                   encoding="utf-8")
    (dist / "entry_points.txt").write_text("[probecore]\nvault = probecore_vault\n", encoding="utf-8")
    return site


def python_path(site: Path) -> str:
    """*site* in front of whatever PYTHONPATH the test run has."""
    return os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def probe(args: list[str], *, cwd: Path, site: Path, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """``probe ARGS`` with the same plugins as the table: tcp and vault, no other built-in."""
    blocked = [arg for name in probecore.BUILTIN_PLUGINS
               if name not in ONLY_TCP and hasattr(importlib.import_module(name), "probecore_add_probes")
               for arg in ("--no-plugin", name)]
    full_env = {**os.environ, "PYTHONPATH": python_path(site), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "probecore", *blocked, *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=60)


CLI_CASES = ("missing-file", "not-utf-8", "invalid-toml-unclosed-string", "unknown-table",
             "duplicate-check-ids", "unknown-probe-kind", "port-as-string", "duration-without-unit",
             "secret-as-literal", "objective-names-missing-check", "maintenance-naive-date-time",
             "toml-nested-too-deeply")


@pytest.mark.parametrize(("text", "message"), [c for c in CASES if c.id in CLI_CASES])
def test_probe_check_prints_the_same_one_line_message(text: str | bytes | None, message: str,
                                                      tmp_path: Path, vault_site: Path) -> None:
    write(tmp_path / "profile.toml", text)
    result = probe(["check", "profile.toml"], cwd=tmp_path, site=vault_site)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"probe: error: {message}\n"
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""


def test_every_cli_case_is_in_the_table() -> None:
    assert set(CLI_CASES) <= {c.id for c in CASES}


# ---- a valid profile, and secrets -------------------------------------------------------------

VALID = '''
    [profile]
    name = "acme"
    contract = "001"
    timezone = "Asia/Shanghai"
    fee = { monthly = 300.0, currency = "CNY" }

    [defaults]
    interval = "1m"
    timeout = "10s"
    confirm = 2

    [[check]]
    id = "ssh"
    probe = "tcp"
    host = "127.0.0.1"
    port = 22
    labels = { team = "ops" }

    [[check]]
    id = "vault"
    probe = "vault"
    url = "https://vault.example.cn/"
    password = { env = "PROBECORE_TEST_VAULT_PASSWORD" }
    timeout_x = "5s"

    [[objective]]
    id = "001-W"
    kind = "availability"
    check = "ssh"
    op = ">="
    target = 0.99

    [[maintenance]]
    start = 2026-11-01T02:00:00+08:00
    end = 2026-11-01T04:00:00+08:00
    '''


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "pw-" + secrets.token_hex(12)
    monkeypatch.setenv("PROBECORE_TEST_VAULT_PASSWORD", value)
    return value


def test_valid_profile_loads_and_keeps_the_secret_a_reference(
        host: probecore.PluginHost, tmp_path: Path, password: str) -> None:
    path = tmp_path / "acme.toml"
    write(path, textwrap.dedent(VALID))
    profile = probecore.load_profile(path, host.probes)
    vault = profile.check("vault")
    assert vault.config.password == probecore.Secret("env", "PROBECORE_TEST_VAULT_PASSWORD")
    assert vault.config.timeout_x == 5.0
    assert vault.config.password.reveal() == password
    for shown in (repr(vault.config), str(vault.config.password), repr(vault), repr(profile)):
        assert password not in shown
    assert "PROBECORE_TEST_VAULT_PASSWORD" in repr(vault.config)


def test_probe_check_accepts_a_valid_profile_and_never_prints_a_secret(
        tmp_path: Path, vault_site: Path, password: str) -> None:
    write(tmp_path / "acme.toml", textwrap.dedent(VALID))
    result = probe(["check", "acme.toml"], cwd=tmp_path, site=vault_site)
    assert result.returncode == 0, result.stderr
    assert "acme.toml: profile acme is valid (contract 001)" in result.stdout
    assert "vault" in result.stdout and "https://vault.example.cn/" in result.stdout
    assert password not in result.stdout + result.stderr


def test_probe_run_never_prints_a_secret(tmp_path: Path, vault_site: Path, password: str) -> None:
    # The vault probe reveals the password and (carelessly) echoes it in its details.
    write(tmp_path / "vault.toml", textwrap.dedent('''
        [profile]
        name = "acme"

        [[check]]
        id = "vault"
        probe = "vault"
        url = "https://vault.example.cn/"
        password = { env = "PROBECORE_TEST_VAULT_PASSWORD" }
        '''))
    store = f"sqlite:{tmp_path / 's.sqlite3'}"
    result = probe(["run", "--once", "--store", store, "vault.toml"], cwd=tmp_path, site=vault_site)
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    assert '"echo":"logged in with ***"' in result.stdout
    records = probe(["records", "vault.toml", "--store", store], cwd=tmp_path, site=vault_site)
    assert records.returncode == 0, records.stderr
    assert records.stdout.count("\n") == 1
    assert password not in records.stdout + records.stderr
