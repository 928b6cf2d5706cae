"""Site selector: a site's labels must match ``placement.siteSelector``. Screened once per
deployment and distinct set of labels."""

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

SELECTOR = Check("selector")


class Selector(Constraint):
    checks = (SELECTOR,)

    def screen(self, pairs: Pairs) -> None:
        label_sets: dict[tuple[tuple[str, str], ...], int] = {}
        site_labels = [
            label_sets.setdefault(tuple(sorted(site.labels.items())), len(label_sets))
            for site in pairs.sites
        ]
        verdicts = np.full((len(pairs.specs), len(label_sets)), PASSED, dtype=np.int32)
        for deployment, spec in enumerate(pairs.specs):
            selector = spec.placement.site_selector
            if selector is None:
                continue
            for labels, column in label_sets.items():
                mismatch = selector.mismatch(dict(labels))
                if mismatch is not None:
                    verdicts[deployment, column] = pairs.rejections.of(
                        (SELECTOR, mismatch),
                        functools.partial(Rejection, SELECTOR, f"selector: {mismatch}"),
                    )
        pairs.reject(verdicts[:, site_labels])

    def unplaced(self, fallen: Fallen) -> str:
        selector = fallen.placement.spec.placement.site_selector
        described = selector.describe() if selector is not None else ""
        return (
            f"no site{fallen.scope} matches placement.siteSelector {described} ({fallen.examples})"
        )
