"""Shared fixtures. Every SLI record any test produces is checked against the JSON Schema."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import jsonschema
import pytest

import probecore
from probecore import _scheduler

# The PostgreSQL fixtures (postgresql_server, postgresql_url) are for every test module.
pytest_plugins = ["tests.servers.postgresql"]

_SEEN: list[bytes] = []


def sli_validator() -> jsonschema.Draft202012Validator:
    schema = probecore.record_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid_records(lines: list[bytes] | list[str]) -> list[dict]:
    """Validate JSON lines (e.g. a subprocess's stdout) against ``probecore.sli/1``."""
    validator = sli_validator()
    parsed = []
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode()
        if not line.strip():
            continue
        data = json.loads(line)
        errors = sorted(validator.iter_errors(data), key=str)
        assert not errors, f"record does not match probecore.sli/1: {errors[0].message}\n{line}"
        parsed.append(data)
    return parsed


@pytest.fixture(scope="session", autouse=True)
def _validate_every_record() -> Iterator[None]:
    """Wrap the one place records are built and validate everything built during the session."""
    original = _scheduler.Scheduler._record

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        record = original(self, *args, **kwargs)
        _SEEN.append(probecore.encode_record(record))
        return record

    _scheduler.Scheduler._record = recording  # type: ignore[method-assign]
    try:
        yield
    finally:
        _scheduler.Scheduler._record = original  # type: ignore[method-assign]
    assert_valid_records(_SEEN)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes into the real user data dir."""
    monkeypatch.setenv("PROBECORE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.delenv("PROBECORE_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def records_seen() -> int:
    return len(_SEEN)


IN_CI = bool(os.environ.get("CI"))
