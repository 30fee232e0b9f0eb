"""Run asyncio-only libraries from trio: THE one bridge (public as :func:`probecore.run_asyncio`).

probecore's scheduler is trio; some protocol libraries (aioftp, aiosmtplib …) speak only
asyncio. A plugin that needs one awaits::

    result = await probecore.run_asyncio(some_async_function, arg1, arg2)

``some_async_function(arg1, arg2)`` then runs as a task on **one asyncio event loop that lives
in a dedicated daemon worker thread** ("probecore-asyncio"), shared by every plugin in the
process. The loop is created inside that thread on first use (thread-safe, once per process,
again after a ``fork``). The caller's trio task waits without blocking trio; many calls may be
in flight at once.

Semantics:

* **Results and exceptions propagate.** The return value comes back to trio; an exception
  raised in the asyncio task is re-raised in the trio caller (an ``asyncio.CancelledError``
  that trio did not ask for becomes a ``RuntimeError``, so it can never pass for trio's own
  cancellation).
* **trio cancellation reaches asyncio.** When the trio caller is cancelled (the scheduler's
  timeout is a cancel scope), the asyncio task is cancelled (``task.cancel()``) and the trio
  caller waits, shielded but for at most ``cleanup_grace`` seconds, for the task to finish, so
  that its ``finally`` blocks (closing sockets, aioftp's ``client.close()``) have run before the
  attempt's record is written. Then ``trio.Cancelled`` goes on as usual. A task that ignores
  cancellation for longer than the grace is left running on the loop; its result is dropped.
* **Objects stay on their loop.** Anything the task creates (streams, transports, clients)
  belongs to the bridge loop. Touch it only from code that runs there, i.e. from coroutines
  passed to ``run_asyncio``; several calls may work on the same object one after another (the
  FTP probe keeps one aioftp client across its phases this way). Close such objects in a
  ``finally`` of the trio caller by another ``run_asyncio`` call under a shielded, bounded
  cancel scope; a result that owns a resource is lost if the call is cancelled just as it
  completes, so keep resources on an object the caller already holds rather than returning them.
* Callbacks never run in the trio thread, and nothing is copied between the two contexts
  (contextvars, sniffio's "current library"): inside the task the library sees plain asyncio.

Why a worker thread and not trio-asyncio (measured on this project's 2-core machine while the
design was settled; see the FTP issue): 200 FTP sessions (connect, login, PWD, LIST, QUIT)
against a local aioftp server cost 2.15 ms of client CPU each through this bridge, against
2.10 ms in plain asyncio, while trio-asyncio cost 6.2–6.6 ms; at 50 sessions at a time the
bridge reached 524 sessions/s (1.59 ms CPU each), trio-asyncio 190/s (5.24 ms). Cancellation
at a 2 ms deadline stopped 50 of 50 attempts through the bridge (median 2.6 ms) but only 4–13
of 50 through trio-asyncio, which let the rest run to completion. And importing trio_asyncio
changes asyncio process-wide (``asyncio.new_event_loop()`` inside trio then raises
``RuntimeError: You're within a Trio environment``), which would break any other plugin that
uses asyncio; that is also why the bridge loop is created inside its own thread.

Costs to keep in mind: every call is two thread wake-ups, measured at about 0.13 ms of CPU and
wall time per call on the project's 2-core machine (a bare ping-pong between the two threads
costs 0.12 ms; the bridge adds about 0.02 ms). So make one call per protocol step, not per
read or write: the FTP probe makes five calls per login (connect, banner, login, quit, close)
and spends 2.7 ms of client CPU per login against vsftpd, against 1.4 ms for a plain asyncio
script doing the same. CPU-heavy or blocking work in a task stalls every other plugin's
asyncio task, so keep tasks to I/O, and bound what a task reads from a server (the FTP probe
stops a reply at 64 KiB or 500 lines: 30 checks against endless ``220-`` banners otherwise kept
this loop parsing until their timeouts and held every other FTP login up by ~1.5 s). Blocking
calls belong in the loop's default executor (``loop.run_in_executor(None, …)``, as asyncio's
own name resolution does), which has :data:`EXECUTOR_THREADS` threads rather than asyncio's
six on two cores, so that a few slow ones do not queue the rest.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import trio

T = TypeVar("T")

DEFAULT_CLEANUP_GRACE = 2.0
THREAD_NAME = "probecore-asyncio"
EXECUTOR_THREADS = 64
"""Threads of the bridge loop's default executor (``getaddrinfo``, ``run_in_executor(None, …)``)."""


class _LoopThread:
    """The bridge loop and its thread; started on first use, restarted in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = self._start()
                self._pid = os.getpid()
            return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        ready = threading.Event()
        box: list[asyncio.AbstractEventLoop] = []

        def main() -> None:
            # Created here, not in the caller's thread: inside trio (and after trio_asyncio is
            # imported) a new loop must not be made, and a loop belongs to the thread it runs in.
            loop = asyncio.new_event_loop()
            # asyncio's default executor has min(32, CPUs + 4) threads: 6 on two cores. Every
            # name resolution of every plugin on this loop runs there, and a resolution cannot be
            # abandoned, so six slow names (a hostile or dead resolver) would hold up every other
            # check's connect. Threads are only started when needed.
            loop.set_default_executor(ThreadPoolExecutor(EXECUTOR_THREADS,
                                                         thread_name_prefix=f"{THREAD_NAME}-executor"))
            asyncio.set_event_loop(loop)
            box.append(loop)
            ready.set()
            while True:
                try:
                    loop.run_forever()
                    return  # only if someone called loop.stop()
                except BaseException:  # noqa: BLE001
                    # A task raised KeyboardInterrupt/SystemExit: asyncio re-raises it out of
                    # run_forever after storing it in the task, whose caller receives it. The
                    # loop itself is intact: keep serving the other tasks.
                    continue

        thread = threading.Thread(target=main, name=THREAD_NAME, daemon=True)
        thread.start()
        ready.wait()
        return box[0]


_THREAD = _LoopThread()


def bridge_loop() -> asyncio.AbstractEventLoop:
    """The bridge's asyncio loop (started if need be). For tests and diagnostics only:
    never run code on it except through :func:`run_asyncio`."""
    return _THREAD.loop()


async def run_asyncio(coro_fn: Callable[..., Awaitable[T]], *args: Any,
                      cleanup_grace: float = DEFAULT_CLEANUP_GRACE) -> T:
    """Run ``await coro_fn(*args)`` on the bridge's asyncio loop; return its result to trio.

    :param coro_fn: an async function (or any callable returning an awaitable); it is called in
        the loop's thread.
    :param cleanup_grace: when the trio caller is cancelled, how long (seconds) to wait, shielded,
        for the cancelled asyncio task to finish its cleanup before ``trio.Cancelled`` goes on.
    :raises: whatever the asyncio task raised; ``trio.Cancelled`` if the caller was cancelled.
    """
    loop = _THREAD.loop()
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    state: dict[str, Any] = {}

    def deliver(task: asyncio.Task[T]) -> None:  # in the loop thread, when the task is over
        if task.cancelled():
            state["cancelled"] = True
        elif (error := task.exception()) is not None:
            state["error"] = error
        else:
            state["value"] = task.result()
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the trio run ended while a cancelled task lingered
            pass

    def start() -> None:  # in the loop thread
        async def call() -> T:
            return await coro_fn(*args)

        task = loop.create_task(call())
        state["task"] = task
        task.add_done_callback(deliver)

    def cancel() -> None:  # in the loop thread; always after start() (FIFO)
        state["task"].cancel()

    loop.call_soon_threadsafe(start)
    try:
        await done.wait()
    finally:
        if not done.is_set():  # trio cancelled us (or something else interrupted the wait)
            loop.call_soon_threadsafe(cancel)
            with trio.move_on_after(cleanup_grace) as scope:
                scope.shield = True
                await done.wait()
    if "cancelled" in state:
        raise RuntimeError(f"the asyncio task running {_name(coro_fn)} was cancelled "
                           "on the asyncio side")
    if "error" in state:
        error: BaseException = state.pop("error")
        try:
            raise error
        finally:
            del error  # no reference cycle through the traceback
    value: T = state["value"]
    return value


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
