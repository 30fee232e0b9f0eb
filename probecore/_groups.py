"""Group rules: one verdict for a round over several members (mailboxes, power sources, vantages).

A probe that checks several members in one attempt returns an :class:`Observation` whose
``members`` are one observation each (with ``member`` naming it). The scheduler then writes one
record per member, as check ``<profile>/<check>:<member>``, and the round's record as the check
itself, whose outcome is decided here by the check's ``group`` rule:

* ``group = "all"`` (the default): the round fails when any member fails;
* ``group = "any"``: the round is ok when any member is ok (power from mains, UPS *or* generator);
* ``group = { failing = ">= 10%" }``: the round fails when the share of failing members satisfies
  the operator (contract 003: a fault is 10 % or more of users unable to use mail);
  ``{ failing = ">= 2" }`` counts members instead.

A failed round is attributed per class, the provider's first: it is the provider's failure only
when the provider's failing members *alone* meet the rule (contract 003: a fault is 10 % of
users unable to use mail *through the provider*; a held queue for one mailbox plus two wrong
passwords is the provider's fault for one user in ten, not three). Otherwise it is the first
other class (customer, third party, probe, unknown) whose members alone meet it, and when only
all the failures together meet it, the most common class among the non-provider ones: a
failure, but not the provider's (its time is excluded with that class, never counted against
the provider). For ``"all"`` one failing provider member is enough; for ``"any"`` every judged
member must be a provider failure. The round's failure code is the code the attributed
class's members share (every power source: ``no_power``), else ``group``.
Members whose outcome is ``error`` (the probe could not judge them) are no evidence: they are left
out of the count and of the denominator. A round with no judged member is itself an ``error``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ._record import Failure, Observation

OPERATORS = {"<": float.__lt__, "<=": float.__le__, ">=": float.__ge__, ">": float.__gt__}
_FAILING = re.compile(r"^\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
MEMBER_SEPARATOR = ":"


@dataclass(frozen=True)
class GroupRule:
    """A parsed ``group`` key: ``all``, ``any``, or a failing share/count with its operator."""

    kind: str  # "all" | "any" | "failing"
    op: str = ">="
    value: float = 0.0
    percent: bool = False

    @classmethod
    def parse(cls, value: object) -> GroupRule:
        """From the profile value; ``ValueError`` with a user-facing message otherwise."""
        if value in ("all", "any"):
            return cls(str(value))
        if isinstance(value, dict) and set(value) == {"failing"} and isinstance(value["failing"], str):
            match = _FAILING.match(value["failing"])
            if match:
                number = float(match[2])
                if match[3] and number > 100:
                    raise ValueError(f'a share above 100% can never fail: "{value["failing"]}"')
                return cls("failing", match[1], number, bool(match[3]))
        raise ValueError('expected "all", "any" or { failing = ">= 10%" } (or a count: ">= 2")')

    def __str__(self) -> str:
        if self.kind != "failing":
            return self.kind
        return f"failing {self.op} {self.value:g}{'%' if self.percent else ''}"

    def judge(self, members: Sequence[Observation]) -> Observation:
        """The round's outcome and failure for *members* (value, phases, details are the caller's)."""
        judged = [m for m in members if m.outcome != "error"]
        failing = [m for m in judged if m.outcome == "fail"]
        if not judged:
            return Observation.error("group_unjudged", f"none of {len(members)} members could be judged")
        if not self.fails(len(failing), len(judged)):
            return Observation.ok()
        counts = Counter(_party(m) for m in failing)
        attribution = next((p for p in PARTIES if counts.get(p) and self.fails(counts[p], len(judged))), None)
        if attribution is None:
            # Only all the failures together meet the rule: a failure, but not the provider's.
            others = Counter({p: n for p, n in counts.items() if p != "provider"})
            best = max(others.values())
            attribution = next(p for p in PARTIES if others.get(p) == best)
        mine = [m for m in failing if _party(m) == attribution]
        codes = {m.failure.code if m.failure else "fail" for m in mine}
        # One shared reason names the round (every power source: no_power); else "group".
        code = codes.pop() if len(codes) == 1 else "group"
        mixed = len(counts) > 1  # then say whose each failure is, and how many each class has
        names = "; ".join(f"{m.member}: {m.failure.code if m.failure else 'fail'}"
                          + (f" ({_party(m)})" if mixed else "") for m in failing)
        classes = ("; " + ", ".join(f"{p} {counts[p]}" for p in PARTIES if counts.get(p))) if mixed else ""
        return Observation(outcome="fail", failure=Failure(
            code, attribution, f"{len(failing)} of {len(judged)} members failed ({self}{classes}): {names}"))

    def fails(self, failing: int, judged: int) -> bool:
        """Whether *failing* of *judged* members meet the rule."""
        if self.kind == "all":
            return failing >= 1
        if self.kind == "any":
            return failing == judged
        measured = 100.0 * failing / judged if self.percent else float(failing)
        return OPERATORS[self.op](measured, self.value)


PARTIES = ("provider", "customer", "third_party", "probe", "unknown")
"""Attribution classes in the order a round is attributed: the provider's first."""


def _party(member: Observation) -> str:
    return member.failure.attribution if member.failure else "unknown"


def member_check(check: str, member: str) -> str:
    """The check id of a member's records: ``<profile>/<check>:<member>``."""
    return f"{check}{MEMBER_SEPARATOR}{member}"


def parent_check(check: str) -> str:
    """The check a (member) record belongs to: ``acme/mail:alice`` → ``acme/mail``."""
    return check.split(MEMBER_SEPARATOR, 1)[0]


def is_member(check: str) -> bool:
    return MEMBER_SEPARATOR in check
