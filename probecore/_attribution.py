"""The one place where the core changes whose fault a failure is, by rules across checks.

Probes attribute their own failures (a 530 after PASS is the customer's). Some exclusions need
evidence from another check; they are applied here, to every record before the incident
tracker and the store see it, so the live run, the stored records and any later replay agree.

Binding (contract 001 §2.2.2.3): a check may name a *binding* check (``binding = "site-dns"``)
that says whether its target is reachable the way the contract assumes (the site's name points
at the hosting server). A binding check's probe says the binding is wrong with a ``fail`` record
whose ``details["binding"]`` is ``"elsewhere"`` (the dns probe does, for ``mismatch`` and
``nxdomain``). While the binding check's latest record, no older than its staleness limit, says
so and is attributed to someone other than the provider (the customer runs the zone), a
provider-attributed ``fail`` of the bound check is attributed to that party instead, and says so
in its message and in ``details["probecore.binding"]``. Any other binding record (``ok``,
``error``, a failure that leaves the binding right such as a low TTL, a provider failure, or a
stale one) changes nothing.

The rule is idempotent: a record already attributed away from the provider is left as it is, so
stored records can be passed through again (import, evaluation) with the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from ._profile import Check
from ._record import Failure, SLIRecord

STALENESS_FACTOR = 2.0
"""A binding record speaks for at most its check's interval × this factor (plus its timeout)."""

BINDING_DETAIL = "probecore.binding"
BINDING_VERDICT = "binding"
"""The ``details`` key in which a binding check's probe states its verdict."""
ELSEWHERE = "elsewhere"
"""The verdict that the target is bound elsewhere than the contract assumes."""


class Attributor:
    """Applies cross-check attribution rules to records in start order, stream by stream."""

    def __init__(self, checks: Sequence[Check]):
        by_id = {c.id: c for c in checks}
        self._binding_of: dict[str, str] = {}
        self._max_age: dict[str, float] = {}
        for check in checks:
            if check.binding is not None:
                bound = by_id[check.binding]
                self._binding_of[check.full_id] = bound.full_id
                self._max_age[bound.full_id] = bound.interval * STALENESS_FACTOR + bound.timeout
        self._latest: dict[tuple[str, str], SLIRecord] = {}

    def __call__(self, record: SLIRecord) -> SLIRecord:
        """Remember *record* if it is a binding check's, and return it with the rules applied."""
        key = (record.check, record.vantage)
        if record.check in self._max_age:
            self._latest[key] = record
        binding = self._binding_of.get(record.check)
        if binding is None or record.outcome != "fail" or record.failure is None \
                or record.failure.attribution != "provider":
            return record
        evidence = self._latest.get((binding, record.vantage))
        if evidence is None or evidence.outcome != "fail" or evidence.failure is None \
                or evidence.details.get(BINDING_VERDICT) != ELSEWHERE \
                or evidence.failure.attribution == "provider":
            return record
        age = (record.started - evidence.started).total_seconds()
        if not 0 <= age <= self._max_age[binding]:
            return record
        party = evidence.failure.attribution
        check_id = binding.split("/", 1)[1]
        failure = Failure(record.failure.code, party,
                          f"{record.failure.message} [attributed to {party}: binding {check_id} "
                          f"{evidence.failure.code} at {evidence.started_at}]")
        details = {**record.details, BINDING_DETAIL: f"{check_id} {evidence.failure.code} {evidence.started_at}"}
        return _replace(record, failure=failure, details=details)

    def apply_all(self, records: Iterable[SLIRecord]) -> list[SLIRecord]:
        """Apply the rules to stored or imported *records* (sorted by start here)."""
        return [self(r) for r in sorted(records, key=lambda r: r.started_at)]


def _replace(record: SLIRecord, **changes: object) -> SLIRecord:
    return msgspec.structs.replace(record, **changes)
