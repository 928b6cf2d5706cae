"""Residency: a site's jurisdiction must be allowed (``residency.allowedJurisdictions``) and not
denied (``deniedJurisdictions``). Screened once per deployment and jurisdiction."""

from __future__ import annotations

import functools

import numpy as np

from soberana.operator.core.placement.constraints.base import (
    PASSED,
    Check,
    Constraint,
    Fallen,
    Pairs,
    Rejection,
)

JURISDICTION = Check("jurisdiction")


class Residency(Constraint):
    checks = (JURISDICTION,)

    def screen(self, pairs: Pairs) -> None:
        jurisdictions = sorted({site.spec.jurisdiction for site in pairs.sites})
        verdicts = np.full((len(pairs.specs), len(jurisdictions)), PASSED, dtype=np.int32)
        by_rule: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
        for deployment, spec in enumerate(pairs.specs):
            residency = spec.residency
            if residency is None:
                continue
            rule = (tuple(residency.allowed_jurisdictions), tuple(residency.denied_jurisdictions))
            if rule not in by_rule:
                by_rule[rule] = [
                    PASSED
                    if (refusal := residency.refusal(jurisdiction)) is None
                    else pairs.rejections.of(
                        (JURISDICTION, refusal),
                        functools.partial(Rejection, JURISDICTION, f"jurisdiction: {refusal}"),
                    )
                    for jurisdiction in jurisdictions
                ]
            verdicts[deployment] = by_rule[rule]
        column = {jurisdiction: index for index, jurisdiction in enumerate(jurisdictions)}
        pairs.reject(verdicts[:, [column[site.spec.jurisdiction] for site in pairs.sites]])

    def unplaced(self, fallen: Fallen) -> str:
        where = sorted({site.spec.jurisdiction for site in fallen.sites})
        return f"no site{fallen.scope} (sites are in {', '.join(where)})"
