"""The ``browser`` probe against a real nginx serving whole pages, with a real headless Chromium.

nginx serves pages whose sub-resources are deliberately slow (``limit_rate``), missing, or
never finish, a page that builds its content with a script after the load event, and a login
form whose handler sets a session cookie only for the right password (nginx ``if`` on the query
and the cookie). What is asserted are lower bounds the physics imposes (a 30 KB image at
10 KB/s cannot load in less than ~2 s) and what the records say, never tight durations.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from probecore import CheckContext, SLIRecord, encode_record, load_profile
from probecore._runner import RunOptions, run_profile
from probecore.testing import MemoryStore, make_host, write_profile
from probecore_plugins.browser import BrowserConfig, BrowserProbe

from tests.servers import free_port

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx"]

PLUGINS = ("probecore_plugins.browser",)
SLOW_RATE = 10 * 1024          # nginx limit_rate for /slow/: bytes per second
SLOW_IMAGE = 30_000            # bytes (a 100×100 PNG)
# nginx lets the first second's worth through at once, then SLOW_RATE: the image cannot take less.
SLOW_BOUND = (SLOW_IMAGE - SLOW_RATE) / SLOW_RATE
PASSWORD = "s3cret-Pässword"
EXTRA = """
        location /slow/ { limit_rate 10k; limit_rate_after 0; }
        location = /moved.html { return 302 /inbox.html; }
        location = /login {
            if ($arg_password = "s3cret-P%C3%A4ssword") {
                add_header Set-Cookie "session=ok; Path=/";
                return 302 /inbox.html;
            }
            return 302 /login.html?failed=1;
        }
        location = /inbox.html { if ($cookie_session != "ok") { return 403; } }
"""
PAGES = {
    "page.html": """<!doctype html><html><head><title>mail</title>
<link rel="stylesheet" href="style.css"><script src="app.js"></script></head>
<body><h1 id="top">Webmail</h1><img src="logo.png"><img src="slow/photo.png"></body></html>""",
    "style.css": "h1 { color: #123; }\n",
    "app.js": "window.appLoaded = true;\n",
    "broken.html": """<!doctype html><html><body><p>broken</p><img src="missing.png">
<img src="logo.png"></body></html>""",
    "late.html": """<!doctype html><html><body><p>loading…</p><script>
addEventListener("load", () => setTimeout(() => { const d = document.createElement("div");
d.id = "inbox"; document.body.appendChild(d); }, 600));</script></body></html>""",
    "hang.html": """<!doctype html><html><body><img src="slow/huge.png"></body></html>""",
    "login.html": """<!doctype html><html><head><meta charset="utf-8"></head><body><form action="/login" method="get">
<input id="user" name="user"><input id="password" name="password" type="password">
<button id="go" type="submit">Log in</button></form></body></html>""",
    "inbox.html": """<!doctype html><html><body><div id="inbox">3 new messages</div>
<img src="logo.png"></body></html>""",
}

HEAD = """\
[profile]
name = "pages"

[defaults]
interval = "1m"
timeout = "60s"
confirm = 1
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Nginx:
    from tests.servers.nginx import _stop, png, start_nginx

    directory = tmp_path_factory.mktemp("pages")
    www = directory / "www"
    (www / "slow").mkdir(parents=True)
    for name, text in PAGES.items():
        (www / name).write_text(text, encoding="utf-8")
    (www / "logo.png").write_bytes(png(40, 40))
    (www / "slow" / "photo.png").write_bytes(png(100, 100))
    (www / "slow" / "huge.png").write_bytes(png(1000, 1000))
    server, proc = start_nginx(directory, extra=EXTRA)
    yield server
    _stop(proc)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Chromium's profile directories go under this test's temp dir: the leak checks look there."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def chromium_processes(marker: Path) -> list[int]:
    """Pids of live processes whose command line names *marker* (our Chromiums' profile dirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(marker).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def run_checks(tmp_path: Path, checks: str) -> dict[str, SLIRecord]:
    host = make_host(builtins=PLUGINS)
    profile = load_profile(write_profile(tmp_path, HEAD + checks), host.probes)
    result = await run_profile(profile, host, MemoryStore(),
                               RunOptions(once=True, handle_signals=False, vantage="test"))
    assert len(result.records) == len(profile.checks)
    return {r.check.split("/", 1)[1]: r for r in result.records}


async def test_pages_of_one_run(tmp_path: Path, site: Nginx, private_tmp: Path) -> None:
    refused = free_port()
    records = await run_checks(tmp_path, f"""
[[check]]
id = "page"
probe = "browser"
url = "{site.url}page.html"

[[check]]
id = "broken"
probe = "browser"
url = "{site.url}broken.html"

[[check]]
id = "broken-allowed"
probe = "browser"
url = "{site.url}broken.html"
max_failed_resources = 1

[[check]]
id = "late"
probe = "browser"
url = "{site.url}late.html"
wait_for = "#inbox"

[[check]]
id = "missing"
probe = "browser"
url = "{site.url}nothing-here.html"

[[check]]
id = "refused"
probe = "browser"
url = "http://127.0.0.1:{refused}/"

[[check]]
id = "moved"
probe = "browser"
url = "{site.url}moved.html"

[[check]]
id = "strict"
probe = "browser"
url = "{site.url}page.html"
threshold = {{ op = "<=", value = "500ms" }}
""")
    page = records["page"]
    assert page.outcome == "ok", page
    assert page.probe == "browser" and page.unit == "s"
    # The slow image bounds the load from below; one request for the HTML alone would not.
    assert page.value is not None and page.value >= SLOW_BOUND
    assert list(page.phases) == ["browser", "dns", "connect", "ttfb", "dom_content_loaded", "load"]
    assert page.phases["load"] >= SLOW_BOUND - page.details["dom_content_loaded_s"]
    assert page.details["ttfb_s"] < page.details["dom_content_loaded_s"] <= page.details["load_s"] == page.value
    assert page.details["status"] == 200
    assert page.details["resources"] == 5          # the document, css, js and two images
    assert page.details["bytes"] >= SLOW_IMAGE + 4_800 + sum(len(PAGES[n]) for n in ("page.html", "style.css", "app.js"))
    assert page.details["failed_resources"] == 0
    assert page.duration_s >= page.value

    broken = records["broken"]
    assert broken.outcome == "fail" and broken.failure is not None
    assert broken.failure.code == "resources_failed" and "missing.png" in broken.failure.message
    assert broken.details["failed_resources"] == 1 and "missing.png (HTTP 404)" in str(broken.details["failed_resource"])
    assert records["broken-allowed"].outcome == "ok"

    late = records["late"]
    assert late.outcome == "ok", late
    # The element comes 600 ms after the load event: the open time waits for it.
    assert late.value is not None and late.value > late.details["load_s"]
    assert list(late.phases)[-1] == "wait_for" and late.phases["wait_for"] >= 0.59

    missing = records["missing"]
    assert missing.outcome == "fail" and missing.failure is not None
    assert (missing.failure.code, missing.details["status"]) == ("http_status", 404)

    down = records["refused"]
    assert down.outcome == "fail" and down.failure is not None
    assert down.failure.code == "navigation_failed" and "ERR_CONNECTION_REFUSED" in down.failure.message
    assert down.failure.attribution == "provider"

    moved = records["moved"]  # redirected to the inbox, which refuses a visitor without a session
    assert list(moved.phases)[:3] == ["browser", "redirect", "dns"] and moved.details["status"] == 403

    strict = records["strict"]
    assert strict.outcome == "fail" and strict.failure is not None and strict.failure.code == "too_slow"
    # One browser served them all, and it is gone with the run.
    assert chromium_processes(private_tmp) == []


async def test_login_then_page_and_password_never_recorded(tmp_path: Path, site: Nginx,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBMAIL_PASSWORD", PASSWORD)
    monkeypatch.setenv("WRONG_PASSWORD", "not-" + PASSWORD)
    login = (f'url = "{site.url}login.html", user = "probe", user_field = "#user", '
             'password_field = "#password", submit = "#go"')
    records = await run_checks(tmp_path, f"""
[[check]]
id = "inbox"
probe = "browser"
url = "{site.url}inbox.html"
wait_for = "#inbox"
login = {{ {login}, password = {{ env = "WEBMAIL_PASSWORD" }} }}

[[check]]
id = "no-login"
probe = "browser"
url = "{site.url}inbox.html"

[[check]]
id = "wrong"
probe = "browser"
url = "{site.url}inbox.html"
login = {{ {login}, password = {{ env = "WRONG_PASSWORD" }}, expect = "#inbox" }}
""")
    inbox = records["inbox"]
    assert inbox.outcome == "ok", inbox
    assert list(inbox.phases)[:2] == ["browser", "login"] and inbox.details["status"] == 200
    # The cookie is what opened the page: without the login it is refused.
    assert records["no-login"].outcome == "fail" and records["no-login"].details["status"] == 403
    wrong = records["wrong"]
    assert wrong.outcome == "fail" and wrong.failure is not None
    assert wrong.failure.code == "login_failed" and "#inbox" in wrong.failure.message
    for record in records.values():
        text = encode_record(record).decode()
        assert PASSWORD not in text and "P%C3%A4ssword" not in text


async def test_timeout_cancels_the_attempt_and_disposes_its_context(site: Nginx) -> None:
    kind = BrowserProbe()
    config = BrowserConfig(url=f"{site.url}hang.html")
    async with kind.lifespan([config]):
        ctx = CheckContext("pages/hang", "test")
        with trio.move_on_after(3.0) as scope:
            await kind.check(config, ctx)
        assert scope.cancelled_caught and ctx.current_phase == "load"
        assert await kind.browser_contexts() == []
        # The browser is still good for the next attempt.
        ok = await kind.check(BrowserConfig(url=f"{site.url}inbox.html"), CheckContext("pages/x", "test"))
        assert ok.outcome == "fail" and ok.details["status"] == 403


async def test_a_browser_crash_is_an_error_at_once_and_the_next_attempt_restarts_it(
        site: Nginx, private_tmp: Path) -> None:
    kind = BrowserProbe()
    config = BrowserConfig(url=f"{site.url}hang.html")
    async with kind.lifespan([config]):
        [pid] = kind.browser_pids()

        async def kill_soon() -> None:
            await trio.sleep(1.5)
            os.killpg(pid, signal.SIGKILL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_soon)
            with trio.fail_after(15):  # the hanging page would take minutes: a crash must not
                crashed = await kind.check(config, CheckContext("pages/hang", "test"))
        assert crashed.outcome == "error" and crashed.failure is not None
        assert crashed.failure.code == "browser_crashed"
        assert "exited" in crashed.failure.message or "closed" in crashed.failure.message
        again = await kind.check(BrowserConfig(url=f"{site.url}page.html"), CheckContext("pages/p", "test"))
        assert again.outcome == "ok", again
        assert kind.browser_pids() and kind.browser_pids() != [pid]
    assert chromium_processes(private_tmp) == []


async def test_missing_browser_is_a_clear_error(tmp_path: Path, site: Nginx) -> None:
    records = await run_checks(tmp_path, f"""
[[check]]
id = "nobrowser"
probe = "browser"
url = "{site.url}page.html"
browser = "{tmp_path}/no-such-chromium"
""")
    record = records["nobrowser"]
    assert record.outcome == "error" and record.failure is not None
    assert record.failure.code == "browser_missing" and "no-such-chromium" in record.failure.message


async def test_pages_wait_for_a_slot_beyond_max_pages(site: Nginx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BrowserProbe, "max_pages", 1)
    kind = BrowserProbe()
    config = BrowserConfig(url=f"{site.url}page.html")
    contexts = [CheckContext(f"pages/p{i}", "test") for i in range(2)]
    async with kind.lifespan([config]):
        async with trio.open_nursery() as nursery:
            for ctx in contexts:
                nursery.start_soon(kind.check, config, ctx)
    # One of the two waited in phase "browser" for the other's whole slow page.
    waited = max(ctx.phases["browser"] for ctx in contexts)
    assert waited >= SLOW_BOUND


def test_bad_keys_are_one_line_errors(tmp_path: Path) -> None:
    from probecore import ProfileError

    host = make_host(builtins=PLUGINS)
    for body, words in (('url = "ftp://x/"', 'key "url"'), ('url = "http://x/"\nlogin = { url = "http://x/" }', "login"),
                        ('url = "http://x/"\nmax_failed_resources = -1', "max_failed_resources")):
        path = write_profile(tmp_path, HEAD + f'[[check]]\nid = "c"\nprobe = "browser"\n{body}\n')
        with pytest.raises(ProfileError) as caught:
            load_profile(path, host.probes)
        assert words in str(caught.value) and "\n" not in str(caught.value)


async def test_a_run_stopped_from_outside_leaves_no_browser(tmp_path: Path, site: Nginx, private_tmp: Path) -> None:
    host = make_host(builtins=PLUGINS)
    profile = load_profile(write_profile(tmp_path, HEAD + f"""
[[check]]
id = "page"
probe = "browser"
interval = "2s"
timeout = "2s"
url = "{site.url}hang.html"
"""), host.probes)
    seen: list[int] = []
    with trio.move_on_after(4.0) as scope:  # as SIGTERM or --for would: a cancel mid-attempt
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_profile, profile, host, MemoryStore(),
                               RunOptions(handle_signals=False, vantage="test"))
            await trio.sleep(3.0)
            seen = chromium_processes(private_tmp)
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert seen, "the run's browser was not running"
    assert chromium_processes(private_tmp) == []


HOLDER = """
import trio
from probecore_plugins.browser import BrowserConfig, BrowserProbe

async def main():
    kind = BrowserProbe()
    async with kind.lifespan([BrowserConfig(url="http://127.0.0.1:9/")]):
        print(kind.browser_pids()[0], flush=True)
        await trio.sleep(60)

trio.run(main)
"""


def test_a_killed_agent_takes_its_browser_with_it(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives the agent no chance to clean up: the browser is started
    with a parent-death signal (setpriv --pdeathsig), and its renderers follow it."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    agent = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        browser_pid = int(agent.stdout.readline())
        assert chromium_processes(tmp_path), "the browser did not start"
        assert os.getpgid(browser_pid) == browser_pid  # its own process group
    finally:
        agent.kill()
        agent.wait()
        agent.stdout.close()
    deadline = time.monotonic() + 10
    while chromium_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chromium_processes(tmp_path) == []


async def test_the_browser_outlives_idle_worker_threads(site: Nginx) -> None:
    """The parent-death signal belongs to the thread that forked: a browser forked from one of
    trio's worker threads was killed when that thread idled out (10 s). Still there after 12 s."""
    kind = BrowserProbe()
    config = BrowserConfig(url=f"{site.url}inbox.html")
    async with kind.lifespan([config]):
        pids = kind.browser_pids()
        await trio.sleep(12.0)
        later = await kind.check(config, CheckContext("pages/later", "test"))
        assert later.failure is not None and later.failure.code == "http_status", later
        assert kind.browser_pids() == pids
