"""Contract 001 §2.2.2.3 with real parts: the site (nginx) fails while its DNS binding (nsd)
points elsewhere, and `probe run --once` attributes the failure to the customer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.conftest import assert_valid_records

if TYPE_CHECKING:
    from tests.servers.nginx import Nginx

pytest_plugins = ["tests.servers.nginx", "tests.servers.nsd"]

PROFILE = """
[profile]
name = "acme-hosting"
contract = "001"

[defaults]
timeout = "5s"
confirm = 1

[[check]]
id = "site"
probe = "web"
url = "http://www.acme.test:{port}/no-such-page"
resolve = "127.0.0.1"
binding = "site-dns"

[[check]]
id = "site-dns"
probe = "dns"
name = "www.acme.test"
servers = ["{dns}"]
server_timeout = "1s"
expect = {{ addresses = ["127.0.0.1"] }}
"""


def run_once(tmp_path, nginx: Nginx, dns: str) -> tuple[int, dict[str, dict]]:
    path = tmp_path / "acme.toml"
    path.write_text(PROFILE.format(port=nginx.port, dns=dns))
    result = subprocess.run([sys.executable, "-m", "probecore", "run", "--once", str(path), "--store",
                             f"sqlite:{tmp_path / 'acme.sqlite3'}"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PROBECORE_DATA_DIR": str(tmp_path)})
    records = assert_valid_records(result.stdout.splitlines())
    return result.returncode, {r["check"].split("/")[1]: r for r in records}


def test_site_failure_while_the_binding_points_elsewhere_is_the_customers(tmp_path, nginx, nsd_factory):
    from tests.servers.nsd import zone_text

    wrong = nsd_factory.start("acme-wrong", {"acme.test": zone_text("acme.test", 1, "www IN A 192.0.2.99")})
    (tmp_path / "a").mkdir()
    status, records = run_once(tmp_path / "a", nginx, wrong.address)
    assert status == 1
    assert records["site-dns"]["failure"]["code"] == "mismatch"
    assert records["site-dns"]["failure"]["attribution"] == "customer"
    assert records["site-dns"]["details"]["binding"] == "elsewhere"
    site = records["site"]
    assert site["failure"]["code"] == "http_status"
    assert site["failure"]["attribution"] == "customer"
    assert "[attributed to customer: binding site-dns mismatch at " in site["failure"]["message"]
    assert site["details"]["probecore.binding"].startswith("site-dns mismatch ")


def test_site_failure_with_the_binding_right_stays_the_providers(tmp_path, nginx, nsd_factory):
    from tests.servers.nsd import zone_text

    right = nsd_factory.start("acme-right", {"acme.test": zone_text("acme.test", 1, "www IN A 127.0.0.1")})
    (tmp_path / "b").mkdir()
    status, records = run_once(tmp_path / "b", nginx, right.address)
    assert status == 1
    assert records["site-dns"]["outcome"] == "ok"
    assert records["site"]["failure"]["code"] == "http_status"
    assert records["site"]["failure"]["attribution"] == "provider"
    assert "probecore.binding" not in records["site"]["details"]
    assert json.dumps(records["site"]).count("attributed to") == 0
