"""``probe = "browser"``: how long a real browser takes to open a page, scripts, styles and images.

Contract 004 三 judges the web mail page's *opening* time ("web页面打开速度"): the whole page
as its users see it, not one HTTP request (that is the ``web`` kind). This kind drives a headless
Chromium through the DevTools protocol (CDP) and reads the page's own Navigation Timing.

Keys: ``url`` (http or https); optional ``wait_for`` (a CSS selector: the page counts as open
only once it is on the page as well — for pages that build themselves with scripts after the
load event), ``login`` (below), ``max_failed_resources`` (default 0: a sub-resource that fails
— network error or HTTP status 400 or more — fails the attempt), ``browser`` (the executable;
default ``chromium``, then ``chromium-browser``, ``google-chrome`` on PATH), ``threshold =
{ op = "<=", value = "10s" }`` (what the open time must satisfy).

``login = { url = "…/login", user = "probe", password = { env = "WEBMAIL_PASSWORD" },
user_field = "#user", password_field = "#password", submit = "button[type=submit]",
expect = "#inbox" }``: before each attempt's timed page the probe opens ``login.url``, fills the
two fields, clicks ``submit``, waits for the page that follows to load and (with ``expect``)
checks that the selector is on it; the session's cookies then carry over to ``url``. The
password is read through ``ctx.reveal``, so the scheduler scrubs it from every record. A form
that does not navigate when submitted runs into the check's timeout (phase ``login``).

The headline value is the **open time**: from the start of the navigation to the end of the
page's load event (``loadEventEnd``), or to ``wait_for``'s selector appearing if that is later.
Phases, in order, are the Navigation Timing breakdown of the timed page: ``redirect`` (when the
URL redirected within its origin), ``dns``, ``connect``, ``tls`` (https only), ``ttfb``
(request sent → first byte), ``dom_content_loaded`` (first byte →
DOMContentLoaded handlers done), ``load`` (→ load handlers done, sub-resources included), and
``wait_for`` (load → selector) when set; ``browser`` (a fresh context, and a start of Chromium
when it had to be restarted) and ``login`` come first when they take time. Details:
``status``, the cumulative milestones ``ttfb_s``, ``dom_content_loaded_s``, ``load_s``,
``largest_contentful_paint_s`` (when Chromium reports one), ``resources`` (requests that
finished or failed, the document included), ``bytes`` (as transferred, headers included),
``failed_resources`` and the first failed URL as ``failed_resource``.

Failure codes: ``navigation_failed`` (Chromium's net error for the document, e.g.
``net::ERR_CONNECTION_REFUSED``; ``net::ERR_NAME_NOT_RESOLVED`` is ``resolve_failed``,
attribution unknown), ``http_status`` (the document answered 400 or more), ``resources_failed``,
``login_failed`` (``expect`` not on the page after logging in; unknown: a wrong password or the
provider's login service), ``too_slow`` (threshold), ``page_crashed`` — all the provider's
unless said. ``error`` outcomes: ``browser_missing`` (no executable), ``browser_crashed`` (the
browser died or could not start: the probe could not judge), ``bad_selector``, ``script_failed``
(a page script threw while the probe read the page), ``no_timing``.

How: one Chromium per executable and run, started when the run starts (the kind's
:meth:`~probecore.ProbeKind.lifespan`), in its own process group; every attempt gets a fresh
browser context (``Target.createBrowserContext``: no cookies, no cache from the attempt before)
which is disposed when the attempt ends, also when the scheduler's timeout cancels it. At most
:attr:`BrowserProbe.max_pages` pages are open at once per browser; an attempt waits for a slot
in phase ``browser``. A browser that dies fails the attempts in flight at once with
``browser_crashed`` (never a hang) and is started again by the next attempt. At the end of the
run its whole process group is killed and reaped (also when the run is cancelled), so no
renderer or zygote outlives the run; and it is started under ``setpriv --pdeathsig KILL``
(util-linux) where that exists, so that an agent killed outright (SIGKILL, the OOM killer)
takes its browser along. Chromium runs with ``--no-sandbox`` when probecore runs as root
(Chromium's sandbox refuses root).

Why CDP over trio-websocket and not Playwright: the scheduler is trio; Playwright's Python API is
asyncio (a bridge thread) on top of a Node.js driver process and its own browser builds, where
CDP needs only the Debian ``chromium`` and one WebSocket in the run's own event loop, so a
timeout is an ordinary trio cancel scope. trio-websocket is imported on first use, not when
probecore starts.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import trio

from probecore import (
    CheckContext,
    Duration,
    Observation,
    ProbeConfig,
    ProbeKind,
    Secret,
    format_duration,
    hookimpl,
)

DEFAULT_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LAUNCH_TIMEOUT = 30.0      # a cold start on a busy 2-core machine takes seconds
CLOSE_TIMEOUT = 5.0        # reaping the killed browsers at the end of a run
CLEANUP_TIMEOUT = 2.0      # disposing an attempt's context after a cancel
LCP_WAIT_MS = 50           # how long the page is given to hand its buffered LCP entry over
STDERR_LINES = 8           # kept for the message when the browser dies
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
NETWORK_CHANGED_RETRIES = 5
NETWORK_CHANGED_PAUSE = 0.2  # s: let a burst of interface changes settle before the next try
CHROME_FLAGS = (
    "--headless", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
    "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio", "--hide-scrollbars",
    "--password-store=basic", "--use-mock-keychain",
    # Probe the way the profile says, not through a proxy the environment happens to name.
    "--no-proxy-server",
)

Operator = Literal["<", "<=", ">=", ">"]


class Threshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``threshold = { op = "<=", value = "10s" }``: what the open time must satisfy."""

    op: Operator
    value: Duration

    def holds(self, seconds: float) -> bool:
        limit = float(self.value)
        return {"<": seconds < limit, "<=": seconds <= limit, ">=": seconds >= limit,
                ">": seconds > limit}[self.op]


Selector = Annotated[str, msgspec.Meta(min_length=1)]


class Login(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``login = {…}``: the form to fill before the timed page (see the module docstring)."""

    url: Annotated[str, msgspec.Meta(min_length=1)]
    user: Annotated[str, msgspec.Meta(min_length=1)]
    password: Secret
    user_field: Selector
    password_field: Selector
    submit: Selector
    expect: Selector | None = None


class BrowserConfig(ProbeConfig):
    """Keys of a ``probe = "browser"`` check (see the module docstring)."""

    url: Annotated[str, msgspec.Meta(min_length=1)]
    wait_for: Selector | None = None
    login: Login | None = None
    max_failed_resources: Annotated[int, msgspec.Meta(ge=0)] = 0
    browser: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    threshold: Threshold | None = None

    def __post_init__(self) -> None:
        for key, url in (("url", self.url), ("login.url", self.login.url if self.login else None)):
            if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
                raise ValueError(f'key "{key}": expected an http:// or https:// URL with a host, got {url!r}')


class BrowserError(Exception):
    """The browser could not serve an attempt; ``code`` is the record's failure code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class BrowserProbe(ProbeKind[BrowserConfig]):
    kind = "browser"
    Config = BrowserConfig
    unit = "s"

    max_pages: int = 4
    """Pages open at once in one browser; further attempts wait (phase ``browser``)."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._browsers: dict[str, _Browser] = {}
        self._started: list[_Browser] = []  # crashed ones too, until the lifespan reaps them
        self._starting = trio.Lock()

    def target(self, config: BrowserConfig) -> str:
        return config.url

    def host(self, config: BrowserConfig) -> str | None:
        return urlsplit(config.url).hostname

    @asynccontextmanager
    async def lifespan(self, configs: Sequence[BrowserConfig]) -> AsyncIterator[None]:
        """Start one browser per executable the checks name; stop them all at the end."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for config in configs:
                        try:  # a browser that cannot start is each attempt's error, not the run's
                            await self._browser(config)
                        except BrowserError:
                            pass
                    yield
                finally:
                    # The readers and watchers stop first (when the run is cancelled they are
                    # cancelled anyway): what follows must not depend on them.
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                scope.shield = True
                for browser in self._started:
                    await browser.close()
            for browser in self._started:
                browser.kill()  # idempotent: if the bounded close was cut short, gone for sure
            self._started.clear()
            self._browsers.clear()

    async def check(self, config: BrowserConfig, ctx: CheckContext) -> Observation:
        if self._nursery is None:  # called outside a run: a browser for this attempt alone
            async with self.lifespan([config]):
                return await self.check(config, ctx)
        try:
            async with AsyncExitStack() as stack:
                with ctx.phase("browser"):
                    browser = await self._browser(config)
                    await stack.enter_async_context(browser.pages)
                    page = await stack.enter_async_context(browser.page())
                return await _attempt(page, config, ctx)
        except BrowserError as exc:
            return Observation.error(exc.code, str(exc))

    async def browser_contexts(self) -> list[str]:
        """The browser contexts open now in every running browser (for tests and diagnostics:
        empty between attempts, whatever became of the ones before)."""
        found: list[str] = []
        for browser in self._browsers.values():
            if browser.dead is None:
                found += (await browser.call("Target.getBrowserContexts"))["browserContextIds"]
        return found

    def browser_pids(self) -> list[int]:
        """Process ids (= process group ids) of the browsers running now."""
        return [b.pid for b in self._browsers.values() if b.dead is None and b.pid is not None]

    async def _browser(self, config: BrowserConfig) -> _Browser:
        executable = _find_executable(config.browser)
        async with self._starting:
            browser = self._browsers.get(executable)
            if browser is None or browser.dead is not None:
                if browser is not None:
                    browser.kill()
                assert self._nursery is not None
                browser = self._browsers[executable] = _Browser(executable, self._nursery, self.max_pages)
                self._started.append(browser)
                await browser.start()
            return browser


def _find_executable(configured: str | None) -> str:
    if configured is not None:
        found = shutil.which(configured)
        if found is None:
            raise BrowserError("browser_missing", f'browser "{configured}" is not an executable file '
                               "(key browser: a path or a name on PATH)")
        return found
    for name in DEFAULT_BROWSERS:
        found = shutil.which(name)
        if found is not None:
            return found
    raise BrowserError("browser_missing", f"no browser found on PATH ({', '.join(DEFAULT_BROWSERS)}): "
                       'install Debian\'s chromium or set browser = "/path/to/chromium"')


# ---- one attempt ----------------------------------------------------------------------------------

async def _attempt(page: _Page, config: BrowserConfig, ctx: CheckContext) -> Observation:
    if config.login is not None:
        with ctx.phase("login"):
            failed = await _log_in(page, config.login, ctx)
        if failed is not None:
            return failed
    # Timed as phase "load" so that a timeout names it; on success the page's own Navigation
    # Timing replaces this figure with its breakdown.
    with ctx.phase("load"):
        navigation = await page.open(config.url)
        if navigation.failure is not None:
            return navigation.failure
        waited_ms = None
        if config.wait_for is not None:
            waited_ms = await page.wait_for(config.wait_for)
        timing = await page.evaluate(_NAVIGATION_JS)
        lcp = await page.evaluate(_LCP_JS, await_promise=True)
    del ctx.phases["load"]
    if not isinstance(timing, dict):
        return Observation.error("no_timing", "the page reported no Navigation Timing entry")
    phases, milestones = _navigation_phases(timing)
    open_s = milestones["load_s"]
    if waited_ms is not None:
        phases["wait_for"] = max(0.0, waited_ms / 1000.0 - open_s)
        open_s = max(open_s, waited_ms / 1000.0)
    details: dict[str, Any] = {"status": navigation.status, **milestones}
    if isinstance(lcp, (int, float)):
        details["largest_contentful_paint_s"] = round(lcp / 1000.0, 6)
    details.update(page.resource_details())
    observed = {"value": open_s, "phases": phases, "details": details}
    if navigation.status is not None and navigation.status >= 400:
        return Observation.fail("http_status", f"the page answered HTTP {navigation.status}", **observed)
    if page.failed_count > config.max_failed_resources:
        url, why = page.failed[0]
        return Observation.fail("resources_failed", f"{page.failed_count} sub-resource(s) failed "
                                f"(at most {config.max_failed_resources} allowed), first {url}: {why}",
                                **observed)
    if config.threshold is not None and not config.threshold.holds(open_s):
        return Observation.fail("too_slow", f"open time {open_s:.3f}s is not {config.threshold.op} "
                                f"{format_duration(config.threshold.value)}", **observed)
    return Observation.ok(**observed)


async def _log_in(page: _Page, login: Login, ctx: CheckContext) -> Observation | None:
    navigation = await page.open(login.url)
    if navigation.failure is not None:
        return navigation.failure
    password = ctx.reveal(login.password)
    loaded = page.expect_load()
    outcome = await page.evaluate(_FILL_JS % (json.dumps(login.user_field), json.dumps(login.user),
                                              json.dumps(login.password_field), json.dumps(password),
                                              json.dumps(login.submit)))
    if outcome != "ok":
        return Observation.fail("login_failed", f"login form at {login.url}: {outcome}", attribution="unknown")
    await loaded.wait()
    page.check_alive()
    if login.expect is not None and not await page.evaluate(f"!!document.querySelector({json.dumps(login.expect)})"):
        return Observation.fail("login_failed", f"after logging in at {login.url}, {login.expect!r} is "
                                "not on the page (wrong credentials, or the login service failed)",
                                attribution="unknown")
    return None


def _navigation_phases(t: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Navigation Timing (ms since the navigation started) → ordered phases and milestones (s)."""
    def mark(name: str) -> float:
        value = t.get(name)
        return float(value) if isinstance(value, (int, float)) else 0.0

    def span(start: float, end: float) -> float:
        return max(0.0, end - start) / 1000.0

    secure = mark("secureConnectionStart")
    load_end = max(mark("loadEventEnd"), mark("loadEventStart"))
    dcl_end = max(mark("domContentLoadedEventEnd"), mark("domContentLoadedEventStart"))
    phases: dict[str, float] = {}
    if mark("redirectEnd"):  # same-origin redirects only: cross-origin ones report zeros
        phases["redirect"] = span(mark("redirectStart"), mark("redirectEnd"))
    phases["dns"] = span(mark("domainLookupStart"), mark("domainLookupEnd"))
    phases["connect"] = span(mark("connectStart"), secure or mark("connectEnd"))
    if secure:
        phases["tls"] = span(secure, mark("connectEnd"))
    phases["ttfb"] = span(mark("requestStart"), mark("responseStart"))
    phases["dom_content_loaded"] = span(mark("responseStart"), dcl_end)
    phases["load"] = span(dcl_end, load_end)
    milestones = {"ttfb_s": mark("responseStart") / 1000.0, "dom_content_loaded_s": dcl_end / 1000.0,
                  "load_s": load_end / 1000.0}
    return phases, milestones


_NAVIGATION_JS = """(() => {
  const entry = performance.getEntriesByType("navigation")[0];
  return entry ? entry.toJSON() : null;
})()"""

_LCP_JS = """new Promise(resolve => {
  let last = null;
  const done = () => resolve(last);
  try {
    new PerformanceObserver(list => {
      const entries = list.getEntries();
      if (entries.length) last = entries[entries.length - 1].startTime;
      done();
    }).observe({type: "largest-contentful-paint", buffered: true});
  } catch (e) { return done(); }
  setTimeout(done, LCP_WAIT_MS);
})""".replace("LCP_WAIT_MS", str(LCP_WAIT_MS))

_WAIT_FOR_JS = """new Promise((resolve, reject) => {
  const selector = %s;
  const found = () => { try { return !!document.querySelector(selector); } catch (e) { reject(e); return true; } };
  if (found()) return resolve(performance.now());
  const watch = new MutationObserver(() => { if (found()) { watch.disconnect(); resolve(performance.now()); } });
  watch.observe(document, {childList: true, subtree: true, attributes: true});
})"""

_FILL_JS = """(() => {
  const fill = (selector, value) => {
    const field = document.querySelector(selector);
    if (!field) return false;
    field.focus(); field.value = value;
    field.dispatchEvent(new Event("input", {bubbles: true}));
    field.dispatchEvent(new Event("change", {bubbles: true}));
    return true;
  };
  const user = %s, userValue = %s, password = %s, passwordValue = %s, submit = %s;
  if (!fill(user, userValue)) return "no field " + user;
  if (!fill(password, passwordValue)) return "no field " + password;
  const button = document.querySelector(submit);
  if (!button) return "no submit control " + submit;
  button.click();
  return "ok";
})()"""


# ---- a page: one browser context with one target ---------------------------------------------------

class _Navigation:
    def __init__(self, status: int | None, failure: Observation | None):
        self.status = status
        self.failure = failure


class _Page:
    """One attempt's page: CDP session events in, resource counts and load events out."""

    def __init__(self, browser: _Browser, session: str):
        self.browser = browser
        self.session = session
        self._loaded = trio.Event()
        self._document: str | None = None
        self._status: int | None = None
        self._requests: dict[str, str] = {}
        self._responses: dict[str, int] = {}
        self._ignored: set[str] = set()
        self.finished = 0
        self.bytes = 0
        self._failed: list[tuple[str, str, str]] = []
        self.crashed: str | None = None
        self.retries = 0

    @property
    def failed(self) -> list[tuple[str, str]]:
        """``(url, why)`` of each failed sub-resource (the document's own failure is not one)."""
        return [(url, why) for ident, url, why in self._failed if ident != self._document]

    @property
    def failed_count(self) -> int:
        return len(self.failed)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "?")
            if params.get("type") == "Other" and urlsplit(url).path == "/favicon.ico":
                self._ignored.add(params["requestId"])  # the browser's own request, not the page's
            else:
                self._requests[params["requestId"]] = url
        elif params.get("requestId") in self._ignored:
            pass
        elif method == "Network.responseReceived":
            status = int(params.get("response", {}).get("status", 0))
            self._responses[params["requestId"]] = status
            if params["requestId"] == self._document:
                self._status = status
        elif method == "Network.loadingFinished":
            self.finished += 1
            self.bytes += int(params.get("encodedDataLength") or 0)
            ident = params["requestId"]
            status = self._responses.get(ident, 0)
            if status >= 400:
                self._failed.append((ident, self._requests.get(ident, "?"), f"HTTP {status}"))
        elif method == "Network.loadingFailed":
            self.finished += 1
            ident = params["requestId"]
            if not params.get("canceled"):
                self._failed.append((ident, self._requests.get(ident, "?"),
                                     str(params.get("errorText") or params.get("blockedReason") or "failed")))
        elif method in ("Inspector.targetCrashed", _DIED):
            self.crashed = params.get("reason") or "the page's renderer crashed"
            self._loaded.set()

    def check_alive(self) -> None:
        if self.browser.dead is not None:
            raise BrowserError("browser_crashed", self.browser.dead)
        if self.crashed is not None:
            raise BrowserError("page_crashed", self.crashed)

    def expect_load(self) -> trio.Event:
        """An event set by the next load event (or a crash); ask before starting the navigation."""
        self._loaded = trio.Event()
        return self._loaded

    def resource_details(self) -> dict[str, Any]:
        failed = self.failed
        details: dict[str, Any] = {"resources": self.finished, "bytes": self.bytes,
                                   "failed_resources": len(failed)}
        if self.retries:
            details["network_changed_retries"] = self.retries
        if failed:
            details["failed_resource"] = f"{failed[0][0]} ({failed[0][1]})"
        return details

    async def open(self, url: str) -> _Navigation:
        """Navigate to *url* and wait for its load event; counts start afresh.

        Chromium aborts what is in flight with ``net::ERR_NETWORK_CHANGED`` when the vantage's
        own interfaces or addresses change (a VPN, DHCP, another network namespace's veth coming
        up): that says nothing about the page, so the navigation is repeated, at most
        :data:`NETWORK_CHANGED_RETRIES` times, and then blamed on the probe.
        """
        for retry in range(NETWORK_CHANGED_RETRIES + 1):
            self.retries = retry
            if retry:
                await trio.sleep(NETWORK_CHANGED_PAUSE)
            navigation = await self._navigate(url)
            changed = any(NETWORK_CHANGED in why for _, why in self.failed) or (
                navigation.failure is not None and navigation.failure.failure is not None
                and NETWORK_CHANGED in navigation.failure.failure.message)
            if not changed:
                return navigation
        if navigation.failure is None:  # only sub-resources failed: resources_failed says it
            return navigation
        return _Navigation(None, Observation.fail(
            "network_changed", f"{url}: the probing host's network kept changing "
            f"({NETWORK_CHANGED}, {NETWORK_CHANGED_RETRIES + 1} tries)", attribution="probe",
            details=self.resource_details()))

    async def _navigate(self, url: str) -> _Navigation:
        self.finished = self.bytes = 0
        self._failed = []
        self._requests, self._responses, self._status = {}, {}, None
        loaded = self.expect_load()
        result = await self.call("Page.navigate", {"url": url})
        self._document = result.get("loaderId")  # a navigation's request id is its loader id
        self._status = self._responses.get(self._document or "", self._status)
        error = result.get("errorText")
        if error:
            code, who = ("resolve_failed", "unknown") if "NAME_NOT_RESOLVED" in error else ("navigation_failed", "provider")
            return _Navigation(None, Observation.fail(code, f"{url}: {error}", attribution=who,
                                                      details=self.resource_details()))
        await loaded.wait()
        self.check_alive()
        return _Navigation(self._status, None)

    async def wait_for(self, selector: str) -> float:
        """Milliseconds from the navigation's start until *selector* matches an element."""
        return float(await self.evaluate(_WAIT_FOR_JS % json.dumps(selector), await_promise=True))

    async def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": await_promise})
        if "exceptionDetails" in result:
            exc = result["exceptionDetails"].get("exception", {})
            text = exc.get("description") or result["exceptionDetails"].get("text", "exception")
            code = "bad_selector" if "SyntaxError" in text else "script_failed"
            raise BrowserError(code, text.splitlines()[0])
        return result.get("result", {}).get("value")

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.check_alive()
        return await self.browser.call(method, params, session=self.session)


_DIED = "probecore.browserDied"


# ---- the browser process and its DevTools connection -------------------------------------------------

class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] = {}


class _Browser:
    """One Chromium process, its DevTools WebSocket and the tasks that read them."""

    def __init__(self, executable: str, nursery: trio.Nursery, max_pages: int):
        self.executable = executable
        self.nursery = nursery
        self.pages = trio.CapacityLimiter(max_pages)
        self.dead: str | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_pipe: trio.lowlevel.FdStream | None = None
        self._group_gone = False
        self._ws: Any = None
        self._stream: trio.SocketStream | None = None
        self._profile_dir: str | None = None
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._closed: type[Exception] = OSError  # trio_websocket.ConnectionClosed once imported

    async def start(self) -> None:
        import trio_websocket  # heavy: only when a browser check runs

        self._closed = trio_websocket.ConnectionClosed

        self._profile_dir = tempfile.mkdtemp(prefix="probecore-chromium-")
        argv = [self.executable, *CHROME_FLAGS, f"--user-data-dir={self._profile_dir}"]
        if os.geteuid() == 0:
            argv.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        argv.append("about:blank")
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # killed with us even if we are killed (SIGKILL, OOM): no orphan
            argv = [setpriv, "--pdeathsig", "KILL", *argv]
        try:
            # Its own process group (session), so that close() can kill renderers and zygotes too.
            # Started from this thread, not trio's open_process (which forks in a worker thread):
            # the parent-death signal fires when the *thread* that forked exits, and trio's idle
            # worker threads exit after seconds.
            self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self._forget_profile()
            raise BrowserError("browser_missing", f"cannot start {self.executable}: {exc.strerror}") from None
        assert self._process.stderr is not None
        self._stderr_pipe = trio.lowlevel.FdStream(os.dup(self._process.stderr.fileno()))
        self._process.stderr.close()
        self.pid = self._process.pid
        self.nursery.start_soon(self._watch)
        try:
            url = None
            with trio.move_on_after(LAUNCH_TIMEOUT):
                url = await self._devtools_url()
            if url is None:
                raise BrowserError("browser_crashed", f"{self.executable} did not open DevTools within "
                                   f"{LAUNCH_TIMEOUT:g}s{self._stderr_tail()}")
            self.nursery.start_soon(self._drain_stderr)
            # Our own TCP stream, so that close() can close it whatever state the WebSocket is in.
            where = urlsplit(url)
            try:
                self._stream = await trio.open_tcp_stream(where.hostname or "127.0.0.1", where.port or 80)
                self._ws = await trio_websocket.wrap_client_stream(
                    self.nursery, self._stream, f"{where.hostname}:{where.port}", where.path,
                    max_message_size=64 << 20, message_queue_size=math.inf)
            except (OSError, trio_websocket.HandshakeError) as exc:
                raise BrowserError("browser_crashed", f"cannot connect to {self.executable}'s DevTools: "
                                   f"{exc}") from None
            self.nursery.start_soon(self._read)
        except BaseException:
            self.kill()
            raise

    async def _devtools_url(self) -> str | None:
        assert self._stderr_pipe is not None
        buffered = b""
        while True:
            chunk = await self._stderr_pipe.receive_some(65536)
            if not chunk:
                raise BrowserError("browser_crashed", f"{self.executable} exited while starting"
                                   f"{self._stderr_tail(buffered)}")
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").strip()
                if text.startswith("DevTools listening on "):
                    return text.split(" on ", 1)[1]
                if text:
                    self._stderr.append(text)

    async def _drain_stderr(self) -> None:
        # Chromium writes to stderr all along: unread, a full pipe would stop it.
        assert self._stderr_pipe is not None
        try:
            buffered = b""
            while chunk := await self._stderr_pipe.receive_some(65536):
                *lines, buffered = (buffered + chunk).split(b"\n")
                self._stderr.extend(t for line in lines if (t := line.decode(errors="replace").strip()))
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            return

    async def _watch(self) -> None:
        # The only task that waits for the process while it runs (trio allows one waiter on
        # a file descriptor); close() waits once this task is gone.
        status = await self._exited()
        self._die(f"{os.path.basename(self.executable)} exited with status {status}{self._stderr_tail()}")
        self.kill()  # its renderers and zygote, at once, while the group id is surely still ours
        self._group_gone = True
        if self._stream is not None:
            await self._stream.aclose()

    async def _read(self) -> None:
        try:
            while True:
                message = json.loads(await self._ws.get_message())
                if "id" in message:
                    pending = self._pending.get(message["id"])
                    if pending is not None:
                        pending.reply = message
                        pending.done.set()
                    continue
                handler = self._handlers.get(message.get("sessionId", ""))
                if handler is not None:
                    handler(message.get("method", ""), message.get("params", {}))
        except (self._closed, trio.ClosedResourceError, trio.BrokenResourceError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            self._die(f"the DevTools connection to {os.path.basename(self.executable)} closed "
                      f"({type(exc).__name__}: {why}){self._stderr_tail()}")

    def _die(self, reason: str) -> None:
        """Fail every call in flight and wake every page: nothing waits on a dead browser."""
        if self.dead is not None:
            return
        self.dead = reason
        for pending in self._pending.values():
            pending.done.set()
        for handler in list(self._handlers.values()):
            handler(_DIED, {"reason": reason})

    def _stderr_tail(self, extra: bytes = b"") -> str:
        lines = [*self._stderr, *(t for t in extra.decode(errors="replace").splitlines() if t.strip())]
        # The Debian launcher script and D-Bus complain on every start: not the reason.
        lines = [line for line in lines if "dbus" not in line.lower() and "unexpected operator" not in line]
        return f": {lines[-1][:300]}" if lines else ""

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   session: str | None = None) -> dict[str, Any]:
        """Send one CDP command and wait for its reply; a dead browser raises at once."""
        if self.dead is not None:
            raise BrowserError("browser_crashed", self.dead)
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        pending = self._pending[ident] = _Pending()
        try:
            try:
                await self._ws.send_message(json.dumps(message))
            except (self._closed, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._die(f"cannot send to {os.path.basename(self.executable)}: {type(exc).__name__}"
                          f"{self._stderr_tail()}")
            await pending.done.wait()
        finally:
            del self._pending[ident]
        if self.dead is not None and not pending.reply:
            raise BrowserError("browser_crashed", self.dead)
        if "error" in pending.reply:
            error = pending.reply["error"]
            raise BrowserError("browser_crashed" if session is None else "page_crashed",
                               f"{method}: {error.get('message', error)}")
        return pending.reply.get("result", {})

    @asynccontextmanager
    async def page(self) -> AsyncIterator[_Page]:
        """A page in a fresh browser context, disposed on the way out (also when cancelled)."""
        context = (await self.call("Target.createBrowserContext", {"disposeOnDetach": True}))["browserContextId"]
        try:
            target = (await self.call("Target.createTarget",
                                      {"url": "about:blank", "browserContextId": context}))["targetId"]
            session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
            page = _Page(self, session)
            self._handlers[session] = page.on_event
            try:
                for method in ("Page.enable", "Network.enable"):
                    await page.call(method)
                yield page
            finally:
                self._handlers.pop(session, None)
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                scope.shield = True
                try:
                    await self.call("Target.disposeBrowserContext", {"browserContextId": context})
                except BrowserError:
                    pass  # a dead browser takes its contexts with it

    async def close(self) -> None:
        """Kill the browser's process group, reap it, close the pipe and the DevTools socket.

        Called once its background tasks are gone (nothing else waits for the process). No
        polite ``Browser.close`` first: its profile is a temporary directory with nothing to
        save, and a browser that is asked could be the one that no longer answers.
        """
        self.kill()
        if self._stream is not None:
            await self._stream.aclose()
        if self._stderr_pipe is not None:
            await self._stderr_pipe.aclose()
        if self._process is not None:
            await self._exited()

    async def _exited(self) -> int:
        """Wait for the browser process to exit (a pidfd where the kernel has them) and reap it."""
        assert self._process is not None
        if self._process.returncode is not None:  # reaped: its pid may be someone else's now
            return self._process.returncode
        try:
            pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel) or already reaped
            while self._process.poll() is None:
                await trio.sleep(0.05)
            return self._process.returncode
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        return self._process.wait()

    def kill(self) -> None:
        """SIGKILL the browser's process group and remove its profile directory (idempotent)."""
        self._die(self.dead or "the browser was stopped")
        if self.pid is not None and not self._group_gone:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._forget_profile()

    def _forget_profile(self) -> None:
        if self._profile_dir is not None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None


@hookimpl
def probecore_add_probes(registry):  # type: ignore[no-untyped-def]
    registry.add(BrowserProbe)
