"""What verified audit logs say, for an auditor: where requests were processed, and why not.

:class:`Report` takes records one by one (``add``) and gives, between ``since`` and ``until``:

- requests per model x serving jurisdiction x client region;
- refusals (the router answered itself, no site processed it) by model and reason;
- every record where a site that processed the request (the one that served it, or any site it
  was sent to) lies outside a residency restriction the record lists: model, header or tenant.
  There must be none;
- per deployment, every site and jurisdiction where it was placed at some point in the window:
  the placement in force when the window opened (the last change before it) and every change in
  it; that is where the model could have been processed.

Pure: records in, a JSON-able document out.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from soberana.operator.audit.chain import parse_time


def outside(record: Mapping[str, Any]) -> list[str]:
    """Why each site that processed ``record``'s request lay outside its restrictions (if so)."""
    processed: dict[str, Any] = {}
    for attempt in record.get("tried") or []:
        processed[str(attempt.get("site"))] = attempt.get("jurisdiction")
    if record.get("site") is not None:
        processed[str(record["site"])] = record.get("jurisdiction")
    breaches: list[str] = []
    for site, jurisdiction in processed.items():
        if not isinstance(jurisdiction, str):
            breaches.append(f"site {site} processed it, in no known jurisdiction")
            continue
        for restriction in record.get("restrictions") or []:
            allowed = restriction.get("allowed") or []
            denied = restriction.get("denied") or []
            source = restriction.get("source")
            if (allowed and jurisdiction not in allowed) or jurisdiction in denied:
                breaches.append(
                    f"site {site} ({jurisdiction}) is outside the {source} restriction "
                    f"(allowed {allowed or 'any'}, denied {denied or 'none'})"
                )
    return breaches


@dataclass
class _Placement:
    before: list[dict[str, Any]] = field(default_factory=list)  # in force when the window opened
    before_at: dt.datetime | None = None  # the last change before the window
    first_old: list[dict[str, Any]] = field(default_factory=list)  # what the first change replaced
    first_at: dt.datetime | None = None  # the first change in the window
    during: list[dict[str, Any]] = field(default_factory=list)  # sites named by changes in it
    changes: int = 0

    def sites(self) -> list[dict[str, Any]]:
        return [*(self.before if self.before_at is not None else self.first_old), *self.during]


@dataclass
class Report:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    served: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    refusals: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    other: Counter[tuple[str, int]] = field(default_factory=Counter)  # failed at the sites
    breaches: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    gaps: int = 0  # records the writer says it lost
    _placements: dict[str, _Placement] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any], file: str, line: int) -> None:
        kind = record.get("kind")
        if kind not in ("request", "placement", "gap"):
            return
        moment = parse_time(str(record["time"]))
        if kind == "placement":
            self._placement(record, moment)
            return
        if not self._inside(moment):
            return
        if kind == "gap":
            self.gaps += int(record.get("dropped", 0))
            return
        self.requests += 1
        model = str(record.get("model") or "-")
        status = int(record.get("status", 0))
        site, refusal = record.get("site"), record.get("refusal")
        if site is not None:
            key = (model, str(record.get("jurisdiction")), str(record.get("region") or "-"))
            self.served[key] += 1
        elif refusal is not None:
            self.refusals[(model, str(refusal), status)] += 1
        else:
            self.other[(model, status)] += 1
        breaches = outside(record)
        if breaches:
            self.breaches.append(
                {"file": file, "line": line, "seq": record.get("seq"), "id": record.get("id"),
                 "why": breaches}
            )  # fmt: skip

    def _inside(self, moment: dt.datetime) -> bool:
        return (self.since is None or moment >= self.since) and (
            self.until is None or moment < self.until
        )

    def _placement(self, record: Mapping[str, Any], moment: dt.datetime) -> None:
        deployment = str(record.get("deployment"))
        entry = self._placements.setdefault(deployment, _Placement())
        # by time, not by order read: several operator replicas each keep a log
        if self.until is not None and moment >= self.until:
            return
        if self.since is not None and moment < self.since:
            if entry.before_at is None or moment >= entry.before_at:
                entry.before, entry.before_at = list(record.get("new") or []), moment
            return
        if entry.first_at is None or moment < entry.first_at:
            entry.first_old, entry.first_at = list(record.get("old") or []), moment
        entry.changes += 1
        entry.during.extend(record.get("new") or [])

    def document(self) -> dict[str, Any]:
        placements = []
        for deployment, entry in sorted(self._placements.items()):
            sites = {
                (str(share.get("site")), str(share.get("jurisdiction"))) for share in entry.sites()
            }
            if not sites and not entry.changes:
                continue
            placements.append(
                {
                    "deployment": deployment,
                    "changes": entry.changes,
                    "sites": [{"site": s, "jurisdiction": j} for s, j in sorted(sites)],
                    "jurisdictions": sorted({j for _, j in sites}),
                }
            )
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "requests": self.requests,
            "served": [
                {"model": m, "jurisdiction": j, "region": r, "requests": n}
                for (m, j, r), n in sorted(self.served.items())
            ],
            "refused": [
                {"model": m, "reason": reason, "status": status, "requests": n}
                for (m, reason, status), n in sorted(self.refusals.items())
            ],
            "failed": [
                {"model": m, "status": status, "requests": n}
                for (m, status), n in sorted(self.other.items())
            ],
            "lost_records": self.gaps,
            "outside_restrictions": {"count": len(self.breaches), "records": self.breaches},
            "placements": placements,
        }


def table(document: Mapping[str, Any]) -> str:
    """The report as text for a terminal."""
    out: list[str] = []
    window = f"{document['since'] or 'the start'} to {document['until'] or 'the end'}"
    out.append(f"Requests from {window}: {document['requests']}")
    out.append("")
    out.append(_columns(["MODEL", "JURISDICTION", "CLIENT REGION", "REQUESTS"],
                        [[s["model"], s["jurisdiction"], s["region"], str(s["requests"])]
                         for s in document["served"]]))  # fmt: skip
    if document["refused"]:
        out.append("")
        out.append("Refused (no site processed them):")
        out.append(_columns(["MODEL", "REASON", "STATUS", "REQUESTS"],
                            [[r["model"], r["reason"], str(r["status"]), str(r["requests"])]
                             for r in document["refused"]]))  # fmt: skip
    if document["failed"]:
        out.append("")
        out.append("Failed at the sites tried (no answer served):")
        out.append(_columns(["MODEL", "STATUS", "REQUESTS"],
                            [[f["model"], str(f["status"]), str(f["requests"])]
                             for f in document["failed"]]))  # fmt: skip
    if document["lost_records"]:
        out.append("")
        out.append(f"Records lost by the writer (gap records): {document['lost_records']}")
    if document["placements"]:
        out.append("")
        out.append("Where each model could have been processed (placements in the window):")
        out.append(_columns(["DEPLOYMENT", "JURISDICTIONS", "SITES", "CHANGES"],
                            [[p["deployment"], ",".join(p["jurisdictions"]),
                              ",".join(s["site"] for s in p["sites"]), str(p["changes"])]
                             for p in document["placements"]]))  # fmt: skip
    breaches = document["outside_restrictions"]
    out.append("")
    if breaches["count"] == 0:
        out.append("Requests processed outside their residency restrictions: 0")
    else:
        out.append(f"Requests processed outside their residency restrictions: {breaches['count']}")
        for breach in breaches["records"][:20]:
            out.append(f"  {breach['file']} line {breach['line']}: {'; '.join(breach['why'])}")
    return "\n".join(out)


def _columns(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
