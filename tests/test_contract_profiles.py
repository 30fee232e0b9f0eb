"""The four contract profiles load, and judge every measurable clause of CLAUSES.md with the
operator its wording demands (以上 >=, 超过 >, 少于 <, 不超过/以内 <=)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from probecore import load_profile
from probecore._cli import main
from probecore.testing import make_host

ROOT = Path(__file__).resolve().parent.parent
CLAUSES = ROOT.parent / "shared" / "contracts" / "CLAUSES.md"
PROFILES = {
    "001": ROOT / "profiles" / "001-virtual-hosting.toml",
    "002": ROOT / "profiles" / "002-colocation.toml",
    "003": ROOT / "profiles" / "003-enterprise-mail-21cn.toml",
    "004": ROOT / "profiles" / "004-enterprise-mail.toml",
}
NOT_AN_OBJECTIVE = {"002-E"}
"""002-E (ping every 5 min, two misses in a row) is the check's interval and confirm, not an objective."""
PLACEHOLDER_ADDRESS = re.compile(r"^(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+$")


def clause_ids() -> dict[str, list[str]]:
    """Contract → the ids in the first column of the tables under its ``## 00N`` heading."""
    found: dict[str, list[str]] = {}
    contract = None
    for line in CLAUSES.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^##\s+(00\d)\b", line)
        if heading:
            contract = heading[1]
            continue
        if line.startswith("## "):
            contract = None
            continue
        row = re.match(r"^\|\s*(00\d-[A-Z0-9]+)\s*\|", line)
        if contract and row:
            assert row[1].startswith(contract), f"{row[1]} under the {contract} heading"
            found.setdefault(contract, []).append(row[1])
    return found


def objectives(contract: str) -> dict[str, dict]:
    profile = load_profile(PROFILES[contract], make_host().probes)
    return {o["id"]: o for o in profile.objectives}


needs_clauses = pytest.mark.skipif(not CLAUSES.exists(), reason=f"{CLAUSES} is not here")


@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_profile_validates(contract, capsys):
    assert main(["check", str(PROFILES[contract])]) == 0
    assert "is valid" in capsys.readouterr().out


@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_profile_header(contract):
    profile = load_profile(PROFILES[contract], make_host().probes)
    assert profile.contract == contract
    assert str(profile.timezone) == "Asia/Shanghai"
    assert profile.fee is not None and profile.fee.currency == "CNY"


@needs_clauses
def test_clauses_md_lists_the_measurable_clauses():
    ids = clause_ids()
    assert sorted(ids) == ["001", "002", "003", "004"]
    assert ids["002"] == ["002-N", "002-P", "002-E", "002-T", "002-M"]
    assert "004-O4" in ids["004"]


@needs_clauses
@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_every_measurable_clause_has_an_objective(contract):
    judged = {o.get("clause") for o in objectives(contract).values()}
    missing = [c for c in clause_ids()[contract] if c not in NOT_AN_OBJECTIVE and c not in judged]
    assert not missing, f"{PROFILES[contract].name} has no objective for {missing}"


@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_objective_ids_are_named_after_their_clause(contract):
    for ident, objective in objectives(contract).items():
        assert objective["clause"].startswith(contract + "-")
        assert ident == objective["clause"] or ident.startswith(objective["clause"] + "-"), ident


# (objective id, op, target or limit) exactly as CLAUSES.md words them.
OPERATORS = {
    "001": [("001-W", ">=", 0.99), ("001-F", ">", 0.99), ("001-R", "<=", "1.5s"),
            ("001-P", ">=", 0.999), ("001-S-fault", "<=", "5h"), ("001-S-other", "<=", "4h")],
    "002": [("002-N", ">=", 0.999), ("002-N-minutes", "<", "44m"), ("002-P", ">=", 0.999),
            ("002-T", "<=", "15m")],
    "003": [("003-M", ">=", 0.999), ("003-M-minutes", "<=", "44m"), ("003-N", ">=", 0.999),
            ("003-N-minutes", "<=", "44m"), ("003-P", ">=", 0.999), ("003-P-minutes", "<=", "44m"),
            ("003-L-send-mean", "<=", "60s"), ("003-L-send-max", "<=", "1h"),
            ("003-L-receive-mean", "<=", "60s"), ("003-L-receive-max", "<=", "1h"),
            ("003-C-working", "<=", "5m"), ("003-C-offhours", "<=", "30m"),
            ("003-V-detected", ">=", 0.999), ("003-V-removed", ">=", 0.995), ("003-V-spam", ">=", 0.96)],
    "004": [("004-M", ">=", 0.999), ("004-M-minutes", "<", "44m"), ("004-L-send", "<=", "60s"),
            ("004-L-receive", "<=", "60s"), ("004-O1", "<=", "100m"), ("004-O2", "<=", "100m"),
            ("004-O3", ">=", 0.9999), ("004-O4", ">=", 360), ("004-W-broadband", "<=", "10s"),
            ("004-W-narrowband", "<=", "30s")],
}


@pytest.mark.parametrize("contract", sorted(OPERATORS))
def test_operators_follow_the_wording(contract):
    found = objectives(contract)
    for ident, op, threshold in OPERATORS[contract]:
        objective = found[ident]
        assert (objective["op"], objective.get("target", objective.get("limit"))) == (op, threshold), ident


def test_003_counts_the_month_as_30_days_and_the_others_by_the_calendar():
    for contract in PROFILES:
        for objective in objectives(contract).values():
            if objective["kind"] != "availability":
                assert "month_length" not in objective or contract == "004", objective["id"]
                continue
            wanted = "30d" if contract == "003" else "calendar"
            assert objective.get("month_length", "calendar") == wanted, objective["id"]


def test_every_ratio_divides_by_the_whole_month_as_the_contracts_write_it():
    # 002 "99.9 %, i.e. less than 44 minutes a month", 003 1 − Σfault/(30×24×60), 004 三 "无故障时长占当月
    # 总时长的比例": the month, not only the time with evidence; every choice is written out.
    for contract in PROFILES:
        for objective in objectives(contract).values():
            if objective["kind"] == "availability":
                assert objective["denominator"] == "period", objective["id"]


def test_exclusions_follow_each_contract():
    # 001 has no force majeure clause and no maintenance exclusion.
    for objective in objectives("001").values():
        assert "force_majeure" not in objective.get("exclude", [])
        assert "maintenance" not in objective.get("exclude", [])
        assert "exclude" in objective or objective["kind"] == "latency"
    o2 = objectives("002")
    assert {"force_majeure", "maintenance"} <= set(o2["002-N"]["exclude"])
    assert "maintenance" not in o2["002-P"]["exclude"]   # art.2 lists no agreed maintenance
    assert o2["002-N"]["report_within"] == o2["002-P"]["report_within"] == "5d"
    for contract, ids in (("003", ["003-M", "003-N", "003-P"]), ("004", ["004-M", "004-O1", "004-O3"])):
        found = objectives(contract)
        for ident in ids:
            assert {"customer", "third_party", "force_majeure", "maintenance"} <= set(found[ident]["exclude"])


def test_remedies_follow_each_contract():
    # 001 违约责任 1: twice the fee *corresponding to* the shortfall or interruption: pro rata.
    for objective in objectives("001").values():
        assert objective["remedy"] == {"kind": "fee_multiple", "multiple": 2, "of": "interrupted"}
    o2 = objectives("002")
    assert o2["002-N"]["remedy"] == o2["002-N-minutes"]["remedy"] == o2["002-P"]["remedy"] == {"kind": "waive_month"}
    assert o2["002-T"]["remedy"] == {"kind": "fee_days"}
    o3 = objectives("003")
    for ident, objective in o3.items():
        if objective["clause"] in ("003-M", "003-N", "003-P"):
            assert objective["remedy"] == {"kind": "service_time", "multiple": 2, "of": "interrupted"}, ident
        else:
            assert "remedy" not in objective, ident   # 8a covers clauses 1-3 only
    for ident, objective in objectives("004").items():
        assert objective["remedy"] == {"kind": "service_time", "multiple": 2, "of": "period"}, ident


def test_mail_clauses_use_the_mail_probe_as_documented():
    p3 = load_profile(PROFILES["003"], make_host().probes)
    group = p3.check("mailboxes")
    assert group.probe == "mail"
    assert (group.group.kind, group.group.op, group.group.value, group.group.percent) == ("failing", ">=", 10.0, True)
    assert len(group.config.mailboxes) >= 10
    for name, hygiene in (("virus-detected", "virus"), ("virus-removed", "virus"), ("spam-filtered", "spam")):
        assert p3.check(name).config.hygiene == hygiene
    assert "junk" not in p3.check("virus-removed").config.caught   # 杀除: not left in the mailbox
    o3, o4 = objectives("003"), objectives("004")
    assert {o3[i]["metric"] for i in o3 if o3[i]["clause"] == "003-L"} == {"phases.send_delay", "phases.receive_delay"}
    assert {o3[i]["stat"] for i in o3 if o3[i]["clause"] == "003-L"} == {"mean", "max"}
    for ident in ("004-L-send", "004-L-receive"):
        assert o4[ident]["stat"] == "mean"
        assert o4[ident]["exceed"] == {"limit": "1h", "times": 2}
    # The delay checks are single pairs: only then do their records carry the delay phases.
    for profile in (p3, load_profile(PROFILES["004"], make_host().probes)):
        delay = profile.check("delay").config
        assert not delay.mailboxes and float(delay.deliver_within) > 3600


def test_pushed_evidence_and_yearly_days():
    o1, o3, o4 = objectives("001"), objectives("003"), objectives("004")
    assert o1["001-R"]["kind"] == "latency" and o1["001-R"].get("metric", "value") == "value"
    assert o3["003-B"]["kind"] == "heartbeat" and o3["003-B"]["every"] == "1d"
    assert (o4["004-B-incremental"]["every"], o4["004-B-full"]["every"]) == ("1d", "3d")
    assert (o4["004-O4"]["kind"], o4["004-O4"]["period"]) == ("fault_free_days", "year")
    for contract, ids in (("001", ["001-S-fault", "001-S-other"]), ("003", ["003-C-working", "003-C-offhours", "003-B"]),
                          ("004", ["004-B-incremental", "004-B-full"])):
        profile = load_profile(PROFILES[contract], make_host().probes)
        found = objectives(contract)
        for ident in ids:
            assert profile.check(found[ident]["check"]).probe == "push", ident


@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_placeholders_only(contract):
    text = PROFILES[contract].read_text(encoding="utf-8")
    assert "placeholder" in text.split("[profile]")[0]
    settings = "\n".join(line.split("#")[0] for line in text.splitlines())  # not clause numbers
    for address in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", settings):
        assert PLACEHOLDER_ADDRESS.match(address), address
    for host in re.findall(r"[\w.-]+\.(?:cn|net|com|org)\b", settings):
        assert host.split(".")[-2] == "example", host
    assert "password = \"" not in text and "community = \"" not in text


def test_002_notifies_the_designated_contact_within_15_minutes():
    host = make_host()
    profile = load_profile(PROFILES["002"], host.probes, host.evaluators, host.notifiers)
    (route,) = profile.route_configs
    assert route.obligation == 15 * 60 and "confirmed" in route.events
    assert {c.kind for c in profile.channels if c.id in route.channels} == {"email", "webhook"}
    monitored = {o.check for o in profile.objective_configs if o.kind == "notify_delay"}
    assert monitored <= set(route.checks)


def contract_text(contract: str) -> str:
    (path,) = CLAUSES.parent.glob(f"{contract}_*.txt")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_every_objective_quotes_its_clause(contract):
    for ident, objective in objectives(contract).items():
        description = objective.get("description")
        assert isinstance(description, str) and description.strip(), f"{ident} has no description"


@needs_clauses
@pytest.mark.parametrize("contract", sorted(PROFILES))
def test_descriptions_are_the_contracts_own_words(contract):
    """Each line of a description is a passage of the contract, word for word. Whitespace is
    normalised (the contracts indent with U+3000); a passage the contract wraps over lines is
    compared with all whitespace removed."""
    text = contract_text(contract)
    spaced, squeezed = " ".join(text.split()), "".join(text.split())
    for ident, objective in objectives(contract).items():
        for passage in objective["description"].splitlines():
            if not passage.strip():
                continue
            assert (" ".join(passage.split()) in spaced or "".join(passage.split()) in squeezed), \
                f"{ident}: {passage!r} is not in the {contract} contract"
