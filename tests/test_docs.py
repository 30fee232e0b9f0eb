"""The examples in docs/plugins.md run, as one module, and do what the page says."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def doc_module() -> Iterator[types.ModuleType]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    module = types.ModuleType("docs_plugins")
    sys.modules[module.__name__] = module  # msgspec resolves annotations through the module
    try:
        exec(compile("\n".join(blocks), str(DOC), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


async def test_the_guide_example_runs_an_hour_in_mock_time(doc_module, tmp_path, autojump_clock):
    records = await doc_module.an_hour_of_echo(tmp_path)
    assert {r.outcome for r in records} == {"ok"}
    assert all(r.phases == {"think": pytest.approx(0.02)} for r in records)


def test_the_guide_objective_kind_counts_outages(doc_module, tmp_path):
    one = doc_module.judge_outage_count(tmp_path, ["ok", "fail", "fail", "ok", "fail", "ok"])
    assert (one.measured, one.met) == (1, True)       # the lone failure at minute 4 is a flap
    two = doc_module.judge_outage_count(tmp_path, ["ok", "fail", "fail", "ok", "fail", "fail", "ok"])
    assert (two.measured, two.met) == (2, False)
    assert [o.start for o in two.outages] == ["2026-08-31T16:01:00.000Z", "2026-08-31T16:04:00.000Z"]


async def test_the_guide_channel_receives_the_outage_notice(doc_module, tmp_path, autojump_clock):
    deliveries, received = await doc_module.an_outage_notified(tmp_path)
    assert [(d.notice.kind, d.status) for d in deliveries] == [("confirmed", "delivered")]
    assert [n.title for n in received] == ["[docs] down: OUTAGE"]


def test_every_hook_in_the_hookspec_is_in_the_guide():
    from probecore import hookspec

    text = DOC.read_text(encoding="utf-8")
    hooks = [name for name in dir(hookspec) if name.startswith("probecore_")]
    assert hooks
    for name in hooks:
        assert f"`{name}(" in text, f"{name} is not documented in docs/plugins.md"
        assert getattr(hookspec, name).__doc__.strip(), f"{name} has no docstring"
