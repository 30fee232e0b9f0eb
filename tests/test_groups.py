"""Group rules: a round over several members judged as the contract words it."""

from __future__ import annotations

import pytest

from probecore import CheckContext, Observation, ProbeConfig, ProbeKind, ProfileError, hookimpl, load_profile
from probecore._groups import GroupRule, is_member, parent_check
from probecore._runner import RunOptions, run_profile
from probecore._clock import TrioWallClock
from probecore.testing import DEFAULT_START, MemoryStore, make_host, write_profile
from tests.fakes import ScriptedPlugin


def members(failing: int, ok: int, error: int = 0) -> list[Observation]:
    return ([Observation.fail("down", "x", member=f"f{i}") for i in range(failing)]
            + [Observation.ok(member=f"o{i}") for i in range(ok)]
            + [Observation.error("unknown", "x", member=f"e{i}") for i in range(error)])


@pytest.mark.parametrize(("rule", "failing", "ok", "error", "outcome"), [
    ("all", 0, 3, 0, "ok"),
    ("all", 1, 2, 0, "fail"),
    ("any", 2, 1, 0, "ok"),          # power: one source delivering is enough
    ("any", 3, 0, 0, "fail"),
    ("any", 1, 0, 2, "fail"),        # errors are no evidence: the one judged source failed
    ("all", 0, 0, 3, "error"),       # nothing judged
    ({"failing": ">= 10%"}, 1, 9, 0, "fail"),   # 003: 10 % or more of users is a fault
    ({"failing": ">= 10%"}, 0, 10, 0, "ok"),
    ({"failing": ">= 10%"}, 1, 10, 0, "ok"),    # 1 of 11 is 9.1 %
    ({"failing": "> 10%"}, 1, 9, 0, "ok"),      # exactly 10 % does not exceed 10 %
    ({"failing": "> 10%"}, 2, 8, 0, "fail"),
    ({"failing": ">= 10%"}, 1, 9, 5, "fail"),   # errors leave the denominator: 1 of 10
    ({"failing": ">= 2"}, 1, 9, 0, "ok"),
    ({"failing": ">= 2"}, 2, 8, 0, "fail"),
])
def test_rules(rule, failing, ok, error, outcome):
    verdict = GroupRule.parse(rule).judge(members(failing, ok, error))
    assert verdict.outcome == outcome
    if outcome == "fail":
        assert verdict.failure.code == "down"  # the failing members' shared code
        assert verdict.failure.attribution == "provider"
        assert verdict.failure.message.startswith(f"{failing} of {failing + ok} members failed")


def _mailboxes(provider: int, customer: int, ok: int) -> list[Observation]:
    return ([Observation.fail("queue_held", "x", member=f"p{i}") for i in range(provider)]
            + [Observation.fail("imap_auth", "x", attribution="customer", member=f"c{i}") for i in range(customer)]
            + [Observation.ok(member=f"ok{i}") for i in range(ok)])


def test_only_the_providers_failures_count_towards_the_providers_threshold():
    # 003-M: one held queue (provider) and two wrong passwords (customer) of ten mailboxes is
    # 10 % of users unable to use mail through the provider: the provider's fault.
    verdict = GroupRule.parse({"failing": ">= 10%"}).judge(_mailboxes(1, 2, 7))
    assert (verdict.outcome, verdict.failure.attribution, verdict.failure.code) == ("fail", "provider", "queue_held")
    assert verdict.failure.message == ("3 of 10 members failed (failing >= 10%; provider 1, customer 2): "
                                       "p0: queue_held (provider); c0: imap_auth (customer); c1: imap_auth (customer)")
    # At 20 % the provider's one mailbox is not enough on its own; the customer's two are.
    verdict = GroupRule.parse({"failing": ">= 20%"}).judge(_mailboxes(1, 2, 7))
    assert (verdict.failure.attribution, verdict.failure.code) == ("customer", "imap_auth")
    # Only together do they reach 20 %: a failure, but not the provider's.
    verdict = GroupRule.parse({"failing": ">= 20%"}).judge(_mailboxes(1, 1, 8))
    assert verdict.outcome == "fail" and verdict.failure.attribution == "customer"


def test_all_one_provider_failure_is_the_providers_and_any_needs_every_member_the_providers():
    assert GroupRule("all").judge(_mailboxes(1, 2, 0)).failure.attribution == "provider"
    assert GroupRule("any").judge(_mailboxes(1, 2, 0)).failure.attribution == "customer"
    assert GroupRule("any").judge(_mailboxes(3, 0, 0)).failure.attribution == "provider"


@pytest.mark.parametrize("bad", ['"most"', '{ failing = "10%" }', '{ failing = ">= 150%" }',
                                 '{ fail = ">= 1" }', "3"])
def test_bad_group_is_a_profile_error(tmp_path, bad):
    text = f'[profile]\nname = "g"\n[[check]]\nid = "mail"\nprobe = "scripted"\ngroup = {bad}\n'
    with pytest.raises(ProfileError) as caught:
        load_profile(write_profile(tmp_path, text), make_host(ScriptedPlugin()).probes)
    assert 'check "mail": key "group": ' in str(caught.value)


async def test_a_round_writes_member_records_and_the_rounds(tmp_path, autojump_clock):
    text = ('[profile]\nname = "mail"\n[[check]]\nid = "roundtrip"\nprobe = "scripted"\n'
            'members = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]\n'
            'failing_members = ["m3"]\ngroup = { failing = ">= 10%" }\n')
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    store = MemoryStore()
    result = await run_profile(profile, host, store, RunOptions(
        once=True, clock=TrioWallClock(DEFAULT_START), vantage="t", handle_signals=False))
    stored = list(store.records())
    assert sorted(r.check for r in stored if is_member(r.check)) == [f"mail/roundtrip:m{i}" for i in range(10)]
    (round_record,) = [r for r in stored if not is_member(r.check)]
    assert round_record.outcome == "fail"
    assert round_record.failure.message == "1 of 10 members failed (failing >= 10%): m3: member_down"
    assert round_record.details["probecore.members_failed"] == 1
    assert round_record.details["round"] == 1  # the probe's own details are kept
    member = next(r for r in stored if r.check == "mail/roundtrip:m0")
    assert member.phases == {"reach": 0.5} and member.value == 0.5
    assert parent_check(member.check) == "mail/roundtrip"
    assert not result.all_ok
    # Members have incident streams of their own, confirmed like their check.
    assert {e.check for e in store.events()} == {"mail/roundtrip", "mail/roundtrip:m3"}


async def test_duplicate_member_names_are_an_error_record(tmp_path, autojump_clock):
    text = ('[profile]\nname = "p"\n[[check]]\nid = "c"\nprobe = "scripted"\nmembers = ["a", "a"]\n')
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    store = MemoryStore()
    await run_profile(profile, host, store, RunOptions(
        once=True, clock=TrioWallClock(DEFAULT_START), vantage="t", handle_signals=False))
    (record,) = store.records()
    assert record.outcome == "error" and "names must be unique" in record.failure.message


async def test_a_members_open_incident_resumes_after_a_restart(tmp_path, autojump_clock):
    text = ('[profile]\nname = "p"\n[defaults]\ninterval = "1m"\nconfirm = 3\n[[check]]\nid = "c"\n'
            'probe = "scripted"\nmembers = ["a", "b"]\nfailing_members = ["b"]\ngroup = "any"\n')
    host = make_host(ScriptedPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    store = MemoryStore()
    # Two runs of two minutes each: member b fails in every round, 2 failures per run. Without
    # its state restored, the second run would start counting again and never reach confirm = 3.
    for start in (DEFAULT_START, DEFAULT_START.replace(minute=2)):
        options = RunOptions(clock=TrioWallClock(start), duration=120, vantage="v", handle_signals=False)
        await run_profile(profile, host, store, options)
    kinds = [e.kind for e in store.events() if e.check == "p/c:b"]
    assert kinds == ["suspected", "confirmed"]


class _Mailboxes(ProbeKind[ProbeConfig]):
    """Ten mailboxes per round: a held queue (provider), two wrong passwords (customer), 7 ok."""

    kind = "mailboxes"
    Config = ProbeConfig

    def target(self, config: ProbeConfig) -> str:
        return "mailboxes"

    async def check(self, config: ProbeConfig, ctx: CheckContext) -> Observation:
        return Observation.ok(members=_mailboxes(1, 2, 7))


class _MailboxesPlugin:
    @hookimpl
    def probecore_add_probes(self, registry):  # type: ignore[no-untyped-def]
        registry.add(_Mailboxes)


async def test_a_held_queue_beside_wrong_passwords_opens_the_providers_incident(tmp_path, autojump_clock):
    # 003-M through probe run: before, the majority (customer) won and no incident opened.
    text = ('[profile]\nname = "m"\n[defaults]\ninterval = "1m"\nconfirm = 2\n[[check]]\nid = "mail"\n'
            'probe = "mailboxes"\ngroup = { failing = ">= 10%" }\n')
    host = make_host(_MailboxesPlugin())
    profile = load_profile(write_profile(tmp_path, text), host.probes)
    store = MemoryStore()
    await run_profile(profile, host, store, RunOptions(clock=TrioWallClock(DEFAULT_START), duration=180,
                                                       vantage="v", handle_signals=False))
    rounds = [r for r in store.records() if r.check == "m/mail"]
    assert rounds and all(r.failure.attribution == "provider" and r.failure.code == "queue_held" for r in rounds)
    assert [e.kind for e in store.events() if e.check == "m/mail"] == ["suspected", "confirmed"]
