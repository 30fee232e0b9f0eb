"""The pipeline: batches off the loop, hooks after storing, nothing dropped when the store fails."""

from __future__ import annotations

import json

import trio

from probecore import decode_record, load_profile
from probecore._pipeline import Pipeline
from probecore._runner import RunOptions, run_profile
from probecore._clock import TrioWallClock
from probecore.testing import DEFAULT_START, MemoryStore, make_host, write_profile
from tests.fakes import ScriptedPlugin
from tests.test_incidents import records_of


class FlakyStore(MemoryStore):
    """Fails the first *failures* writes, like a locked or full disk."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def write(self, records, events):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError(28, "No space left on device")
        super().write(records, events)


async def test_a_failing_store_keeps_the_batch_and_retries(autojump_clock):
    store = FlakyStore(failures=2)
    stored_batches = []
    warnings = []
    pipeline = Pipeline(store, {"p/c": 2}, on_stored=[lambda r, e: stored_batches.append(list(r))],
                        warn=warnings.append)
    for record in records_of(["ok", "provider", "provider"]):
        pipeline.submit(record)
    assert await pipeline.flush() is False
    assert await pipeline.flush() is False
    assert stored_batches == []  # nothing handed on before it is stored
    assert await pipeline.flush() is True
    assert [len(b) for b in stored_batches] == [3]
    assert [e.kind for e in store.events()] == ["suspected", "confirmed"]
    assert len(warnings) == 2 and "No space left on device" in warnings[0]


async def test_a_store_that_never_recovers_leaves_a_rescue_file(tmp_path, autojump_clock, monkeypatch):
    monkeypatch.setenv("PROBECORE_DATA_DIR", str(tmp_path))
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, '[profile]\nname = "p"\n[[check]]\nid = "c"\n'
                                                   'probe = "scripted"\n'), host.probes)
    store = FlakyStore(failures=10**6)
    options = RunOptions(clock=TrioWallClock(DEFAULT_START), duration=180, vantage="t",
                         handle_signals=False)
    result = await run_profile(profile, host, store, options)
    assert result.stored_records == 0
    (rescue,) = tmp_path.glob("unsaved-*.jsonl")
    lines = rescue.read_bytes().splitlines()
    assert len(lines) == 3  # three one-minute slots in three minutes, none lost
    assert all(decode_record(line).check == "p/c" for line in lines)
    assert json.loads(lines[0])["schema"] == "probecore.sli/1"


async def test_a_full_batch_is_flushed_before_the_interval():
    # Real time: the write happens in a worker thread, which a mock clock would jump past.
    store = MemoryStore()
    pipeline = Pipeline(store, {"p/c": 1}, batch_size=3, flush_interval=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        for record in records_of(["ok", "ok"]):
            pipeline.submit(record)
        await trio.sleep(0.2)
        assert list(store.records()) == []  # below the batch size: waits for the interval
        pipeline.submit(records_of(["ok", "ok", "ok"])[2])
        with trio.fail_after(5):
            while len(list(store.records())) < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_store_writes_do_not_wait_behind_busy_worker_threads(tmp_path):
    """Every thread of trio's default limiter is blocked (as by probes resolving names on a
    hostile resolver): a batch is still written at once (was: it waited for a free thread)."""
    import threading
    from functools import partial

    store = make_host().stores.get("sqlite")(f"sqlite:{tmp_path / 'store.sqlite3'}")
    default = trio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(int(default.total_tokens)):
                nursery.start_soon(partial(trio.to_thread.run_sync, release.wait,
                                           abandon_on_cancel=True))
            while default.borrowed_tokens < default.total_tokens:
                await trio.sleep(0.01)
            pipeline = Pipeline(store, {"p/c": 2})
            for record in records_of(["ok", "provider"]):
                pipeline.submit(record)
            done = trio.Event()
            result = {}

            async def flush():
                result["written"] = await pipeline.flush()
                done.set()

            nursery.start_soon(flush)
            with trio.move_on_after(10):  # the flush itself is shielded: wait for it from outside
                await done.wait()
            in_time = done.is_set()
            release.set()
        assert in_time, "the store write waited for one of the default limiter's threads"
        assert result["written"] is True
        assert [r.outcome for r in store.records()] == ["ok", "fail"]
    finally:
        release.set()
        store.close()
