"""`probe demo` (what `./dev demo` runs) does what the README says: an outage, a flap, a wrong binding."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

from tests.conftest import assert_valid_records


def test_demo_shows_an_outage_a_flap_and_a_binding_excluded(tmp_path):
    env = {**os.environ, "PROBECORE_DATA_DIR": str(tmp_path)}
    env["PROBECORE_DEMO_FTP_PASSWORD"] = "demo-Secret-4711"
    env["PROBECORE_DEMO_MAIL_PASSWORD"] = "demo-Mail-0815"
    result = subprocess.run([sys.executable, "-m", "probecore", "demo", "--for", "10s", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    records = assert_valid_records(result.stdout.splitlines())
    by_check: dict[str, list[dict]] = {}
    for record in records:
        by_check.setdefault(record["check"].split("/")[1], []).append(record)
    assert set(by_check) == {"greeting", "flaky", "slow", "site", "site-dns", "ftp", "mail", "power", "power:ups1"}

    def failures(check: str) -> Counter:
        return Counter((r["failure"]["code"], r["failure"]["attribution"]) for r in by_check[check]
                       if r["failure"])

    assert failures("greeting") == Counter()
    assert failures("ftp") == Counter()
    assert failures("mail") == Counter() and by_check["mail"][0]["phases"]["delivery"] >= 0
    # The UPS ran on battery for a while: power still delivered (ok), and reported.
    assert failures("power") == Counter() and failures("power:ups1") == Counter()
    on_battery = [r["details"]["on_battery"] for r in by_check["power:ups1"]]
    assert True in on_battery and on_battery[0] is False and on_battery[-1] is False
    assert set(failures("flaky")) == {("connect_refused", "provider")}
    assert failures("slow") == Counter({("timeout", "provider"): 1})
    assert set(failures("site-dns")) == {("mismatch", "customer")}
    # The site's 503s came while its DNS pointed elsewhere: the customer's, never the provider's.
    assert set(failures("site")) == {("http_status", "customer")}
    assert all("probecore.binding" in r["details"] for r in by_check["site"] if r["failure"])
    assert "1 incident(s) confirmed" in result.stderr
    # It ends with the month's report as a page, and says where.
    page = tmp_path / "demo-report.html"
    assert f"(open it in a browser): {page}\n" in result.stderr
    assert "SLA report · demo" in page.read_text(encoding="utf-8")
    # The on-call route's console channel told of the outage, and the notice is the evidence of
    # the demo's 002-T objective.
    assert re.search(r"notice confirmed demo/flaky via terminal: delivered after \d", result.stderr)
    assert re.search(r"#confirmed/on-call \[demo\] flaky: OUTAGE", result.stderr)
    report = subprocess.run([sys.executable, "-m", "probecore", "report", "--format", "json", "--store",
                             str(tmp_path / "demo.sqlite3"), _demo_profile()],
                            capture_output=True, text=True, env=env, timeout=60)
    verdicts = {o["id"]: o["met"] for o in json.loads(report.stdout)["objectives"]}
    assert verdicts == {"demo-W": True, "demo-flaky-minutes": True, "demo-notice": True}
    assert "demo-Secret-4711" not in result.stdout + result.stderr
    assert "demo-Mail-0815" not in result.stdout + result.stderr

    events = subprocess.run([sys.executable, "-m", "probecore", "records", "--events", "--store",
                             str(tmp_path / "demo.sqlite3"), _demo_profile()],
                            capture_output=True, text=True, env=env, timeout=60)
    assert events.returncode == 0, events.stderr
    kinds = [(json.loads(line)["check"], json.loads(line)["kind"]) for line in events.stdout.splitlines()]
    assert [k for c, k in kinds if c == "demo/flaky"] == ["suspected", "confirmed", "resolved"]
    assert [k for c, k in kinds if c == "demo/slow"] == ["suspected", "flap"]
    assert not any(c == "demo/site" for c, _ in kinds)


def _demo_profile() -> str:
    from probecore._demo import demo_profile_path

    return str(demo_profile_path())
