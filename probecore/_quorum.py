"""The vantage quorum: a check's per-vantage records merged into the rounds the incident tracker sees.

A check that names ``vantages = ["bj", "sh", "gz"]`` and ``quorum = 2`` runs from each vantage at
the same slots (``k·interval + offset``: the offset comes from the check id, so every agent keeps
the same grid). Round *k* is the slot ``[slot_k, slot_k+1)``; a vantage's evidence for it is its
*last* record whose ``scheduled_at`` falls in it (a retry after a failure replaces the slot's
attempt, as it would on one agent). The round is judged like a group round over the vantages
(:class:`~probecore._groups.GroupRule` ``{ failing = ">= quorum" }``): it fails when at least
``quorum`` vantages saw the check fail, and then carries their (most common) attribution. A round in
which fewer than ``quorum`` vantages saw a failure is a ``fail`` attributed to ``probe``: the
failing vantages' own network, never the provider, so it is no evidence for the tracker. Records
of vantages the check does not name are left out; a round with no record of a named vantage has
no merged record (its time is unknown).

The merged round is an ordinary :class:`SLIRecord` of the check with ``vantage = "quorum"`` and
``started_at`` = the round's slot, so the one :class:`~probecore._incidents.IncidentTracker`
turns rounds into incidents (``check@quorum@<first failing slot>``) for the live judge
(``probe judge``) and for ``probe report`` alike: both call this module on the same records.

When is a round decided? Live, once every named vantage's evidence for it is final: its last
record in the round is ``ok`` (no retry follows an ``ok``), or no retry fits before the next slot,
or the vantage has already reported a later round; else once the judge's clock passes the next
slot + the check's timeout + ``grace`` (an agent that is down or late). After the fact (a report)
every round is decided from what is stored. The two agree whenever records reach the store
before that deadline.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._groups import GroupRule
from ._incidents import counts_as_failure
from ._profile import QUORUM_VANTAGE, Check
from ._record import Failure, Observation, SLIRecord, format_timestamp_ms, timestamp_ms

DEFAULT_GRACE_MS = 5_000
"""How long after a round's last possible attempt the live judge waits for late records."""


class VantageMerge:
    """Merges one check's per-vantage records into judged rounds, in round order.

    Feed records with :meth:`add` (any vantage, any order within a round), take the rounds that
    are decided with :meth:`ready`. Records of a round already handed out are ignored.
    """

    def __init__(self, check: Check, *, grace_ms: int = DEFAULT_GRACE_MS):
        if not check.vantages:
            raise ValueError(f"check {check.full_id} names no vantages")
        self.check = check
        self.vantages = check.vantages
        self.rule = GroupRule("failing", ">=", float(check.quorum or len(check.vantages)))
        self.interval_ms = max(1, round(float(check.interval) * 1000))
        self.offset_ms = round(check.phase_offset * 1000)
        self.retry_ms = round(float(check.retry_interval) * 1000)
        self.timeout_ms = round(float(check.timeout) * 1000)
        self.grace_ms = grace_ms
        self._rounds: dict[int, dict[str, SLIRecord]] = {}
        self._latest: dict[str, int] = {}  # vantage -> latest round it reported
        self.decided_through: int | None = None
        """The last round handed out (earlier records are late and ignored)."""

    def round_of(self, record: SLIRecord) -> int:
        """Index *k* of the slot ``[slot_k, slot_k+1)`` the record's ``scheduled_at`` is in."""
        # +1 ms: a slot's timestamp is truncated to the millisecond and may read 1 ms early.
        return (timestamp_ms(record.scheduled_at) - self.offset_ms + 1) // self.interval_ms

    def slot_ms(self, k: int) -> int:
        return k * self.interval_ms + self.offset_ms

    def add(self, record: SLIRecord) -> bool:
        """Take one record of the check; returns whether it counts (a named vantage, a round
        not decided yet)."""
        if record.vantage not in self.vantages:
            return False
        k = self.round_of(record)
        if self.decided_through is not None and k <= self.decided_through:
            return False
        mine = self._rounds.setdefault(k, {})
        held = mine.get(record.vantage)
        if held is None or record.started_at >= held.started_at:
            mine[record.vantage] = record
        if k > self._latest.get(record.vantage, k - 1):
            self._latest[record.vantage] = k
        return True

    def ready(self, now_ms: int | None) -> list[SLIRecord]:
        """The merged records of the rounds decided now, oldest first. ``now_ms=None`` decides
        every round held (the evidence is complete: a report)."""
        out: list[SLIRecord] = []
        for k in sorted(self._rounds):
            if now_ms is not None and not self._decided(k, now_ms):
                break  # rounds go out in order: a later complete round waits for this one
            out.append(self._merge(k, self._rounds.pop(k)))
            self.decided_through = k
        return out

    def pending(self) -> int:
        """Rounds held, not decided yet."""
        return len(self._rounds)

    def _decided(self, k: int, now_ms: int) -> bool:
        next_slot = self.slot_ms(k + 1)
        if now_ms >= next_slot + self.timeout_ms + self.grace_ms:
            return True
        held = self._rounds[k]
        return all(v in held and self._final(k, held[v], next_slot) for v in self.vantages)

    def _final(self, k: int, record: SLIRecord, next_slot: int) -> bool:
        if record.outcome == "ok" or self._latest.get(record.vantage, k) > k:
            return True
        # The scheduler retries a not-ok attempt retry_interval after its start, if that is
        # before the next slot (probecore._scheduler); no retry can come otherwise.
        return self.retry_ms >= self.interval_ms or timestamp_ms(record.started_at) + self.retry_ms >= next_slot

    def _merge(self, k: int, held: dict[str, SLIRecord]) -> SLIRecord:
        records = [held[v] for v in self.vantages if v in held]
        members = [_as_member(r) for r in records]
        verdict = self.rule.judge(members)
        failing = [r for r in records if r.outcome == "fail"]
        quorum = int(self.rule.value)
        failure = verdict.failure
        outcome = verdict.outcome
        if verdict.outcome == "ok" and failing:
            codes = {r.failure.code for r in failing if r.failure}
            code = codes.pop() if len(codes) == 1 else "vantages"
            names = ", ".join(f"{r.vantage}: {r.failure.code if r.failure else 'fail'}" for r in failing)
            # Fewer than the quorum saw it fail: their own network, not the provider.
            outcome = "fail"
            failure = Failure(code, "probe", f"{len(failing)} of {len(members)} vantages failed, "
                              f"below the quorum of {quorum} ({names}): the failing vantages' network")
        elif failure is not None:
            failure = Failure(failure.code, failure.attribution,
                              failure.message.replace("members failed", "vantages failed")
                              .replace(f"(failing >= {quorum:g})", f"(quorum {quorum})"))
        slot = format_timestamp_ms(self.slot_ms(k))
        first = records[0]
        details: dict[str, str | int | float | bool | None] = {
            "probecore.quorum": quorum,
            "probecore.vantages_ok": sum(r.outcome == "ok" for r in records),
            "probecore.vantages_failed": len(failing),
            "probecore.vantages_provider": sum(counts_as_failure(r) for r in records),
            "probecore.vantages_error": sum(r.outcome == "error" for r in records),
            "probecore.vantages_missing": len(self.vantages) - len(records),
        }
        return SLIRecord(check=self.check.full_id, probe=first.probe, target=first.target,
                         vantage=QUORUM_VANTAGE, scheduled_at=slot, started_at=slot,
                         duration_s=max(r.duration_s for r in records), outcome=outcome,
                         failure=failure if outcome != "ok" else None, details=details,
                         labels=first.labels)


def _as_member(record: SLIRecord) -> Observation:
    return Observation(outcome=record.outcome, failure=record.failure, member=record.vantage)


def merge_vantages(check: Check, records: Iterable[SLIRecord]) -> list[SLIRecord]:
    """Every round of *records* (a report's evidence: complete), merged, in round order."""
    merge = VantageMerge(check)
    for record in sorted(records, key=lambda r: r.started_at):
        merge.add(record)
    return merge.ready(None)

