"""What `probe run --once` tells a CI system: a JUnit XML file and GitHub Actions annotations.

Both are views of the same records `--once` stored: one test case / annotation per check (the
round's record of a group check; its members' verdicts are in the message), never secrets
(records are scrubbed before they exist).
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ._groups import MEMBER_SEPARATOR, is_member
from ._profile import Profile
from ._record import SLIRecord


def _verdict(record: SLIRecord) -> str:
    """One line: the failure's code, attribution and message (or the value for an ok)."""
    if record.failure is not None:
        f = record.failure
        return f"{record.outcome}: {f.code} ({f.attribution}): {f.message}"
    if record.value is not None:
        return f"{record.outcome}: {record.value:g}{' ' + record.unit if record.unit else ''}"
    return record.outcome


def _check_records(records: Sequence[SLIRecord]) -> list[SLIRecord]:
    return [r for r in records if not is_member(r.check)]


def _members_of(records: Sequence[SLIRecord], check: str) -> list[SLIRecord]:
    return [r for r in records if is_member(r.check) and r.check.split(MEMBER_SEPARATOR, 1)[0] == check]


def junit_xml(profile: Profile, records: Sequence[SLIRecord]) -> bytes:
    """A JUnit XML document (the Jenkins/GitLab/GitHub reading of it): one ``<testsuite>`` named
    after the profile, one ``<testcase>`` per check; ``fail`` is a ``<failure>`` and ``error`` (the
    probe could not judge) an ``<error>``, each with ``type`` = the failure code and a message
    naming code and attribution."""
    checks = _check_records(records)
    failures = sum(r.outcome == "fail" for r in checks)
    errors = sum(r.outcome == "error" for r in checks)
    suite = ET.Element("testsuite", {
        "name": profile.name, "tests": str(len(checks)), "failures": str(failures),
        "errors": str(errors), "skipped": "0",
        "time": f"{max((r.duration_s for r in checks), default=0.0):.3f}",
    })
    if checks:
        suite.set("timestamp", min(r.started_at for r in checks))  # RFC 3339 strings sort by time
    for record in sorted(checks, key=lambda r: r.check):
        check_id = record.check.split("/", 1)[1]
        case = ET.SubElement(suite, "testcase", {
            "classname": f"{profile.name}.{record.probe}", "name": check_id,
            "time": f"{record.duration_s:.3f}"})
        lines = [f"target: {record.target}", f"vantage: {record.vantage}", _verdict(record)]
        lines += [f"phase {name}: {seconds:.3f} s" for name, seconds in record.phases.items()]
        lines += [f"member {m.check.split(MEMBER_SEPARATOR, 1)[1]}: {_verdict(m)}"
                  for m in _members_of(records, record.check)]
        if record.outcome != "ok":
            tag = "failure" if record.outcome == "fail" else "error"
            code = record.failure.code if record.failure else record.outcome
            element = ET.SubElement(case, tag, {"type": code, "message": _verdict(record)})
            element.text = "\n".join(lines)
        else:
            ET.SubElement(case, "system-out").text = "\n".join(lines)
    suites = ET.Element("testsuites", {"name": "probecore", "tests": str(len(checks)),
                                       "failures": str(failures), "errors": str(errors)})
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: str, profile: Profile, records: Sequence[SLIRecord]) -> None:
    """Write :func:`junit_xml` to *path* atomically (a CI job never reads half a file)."""
    target = Path(path)
    data = junit_xml(profile, records)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _check_lines(profile_path: str) -> dict[str, int]:
    """The line of each ``[[check]]`` table's ``id = "…"`` in the profile (1-based)."""
    try:
        text = Path(profile_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines: dict[str, int] = {}
    in_check = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_check = stripped.replace(" ", "") == "[[check]]"
            continue
        match = re.match(r"""id\s*=\s*["']([^"']+)["']""", stripped)
        if in_check and match:
            lines.setdefault(match.group(1), number)
    return lines


def github_annotations(profile_path: str, records: Sequence[SLIRecord]) -> list[str]:
    """GitHub Actions workflow commands: an ``::error`` per check that failed or could not be
    judged, pointing at the check's table in the profile, and a ``::notice`` for the tally."""
    lines = _check_lines(profile_path)
    out = []
    checks = _check_records(records)
    for record in sorted(checks, key=lambda r: r.check):
        if record.outcome == "ok":
            continue
        check_id = record.check.split("/", 1)[1]
        where = f"file={_escape_property(profile_path)}"
        if check_id in lines:
            where += f",line={lines[check_id]}"
        title = _escape_property(f"probe check {check_id} ({record.probe})")
        out.append(f"::error {where},title={title}::{_escape_data(_verdict(record))}")
    bad = sum(r.outcome != "ok" for r in checks)
    out.append(f"::notice title=probecore::{len(checks)} checks: {len(checks) - bad} ok, {bad} not ok")
    return out
