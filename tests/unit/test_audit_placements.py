"""Placement evidence: the reconciler's placement changes land in a verified, chained audit log,
and the report says where a model could have been processed in a window.

The reconciler runs with the in-memory writer of test_reconciler (for the API server) and a
real audit writer hooked in as ``OperatorConfig.on_placement``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from soberana.operator.audit.chain import Signer
from soberana.operator.audit.placements import placement_record
from soberana.operator.audit.report import Report
from soberana.operator.audit.verify import SegmentSource, verify
from soberana.operator.audit.writer import AuditWriter, WriterSettings
from soberana.operator.controller.config import OperatorConfig, PlacementChange
from soberana.operator.controller.reconciler import Reconciler
from tests.unit.test_reconciler import T0, RecordingWriter, apply, deployment, index, site

DAY = dt.timedelta(days=1)


async def test_placement_changes_are_evidence_of_where_a_model_could_run(tmp_path: Path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    now = [T0]
    audit = AuditWriter(WriterSettings(tmp_path, "operator-0"), signer, clock=lambda: 0.0)
    audit.start()
    changes: list[PlacementChange] = []

    def on_placement(change: PlacementChange) -> None:
        changes.append(change)
        audit.submit(placement_record, change, now[0].timestamp())

    writer = RecordingWriter()
    config = OperatorConfig(debounce_s=0, on_placement=on_placement)
    rec = Reconciler(writer, config, clock=lambda: now[0])
    br, scl = site("br1", "BR"), site("scl1", "CL")
    chat = deployment("chat", ["BR"])
    objects = [br, scl, chat]

    async def reconcile() -> None:
        rec.attach(index(br, scl), index(chat))
        await rec.reconcile_once()
        apply(writer.patches, objects)
        writer.patches.clear()

    await reconcile()  # day 0: placed on br1
    now[0] = T0 + 2 * DAY
    chat["spec"]["residency"]["allowedJurisdictions"] = ["CL"]
    chat["metadata"]["generation"] = 2
    await reconcile()  # day 2: moved to scl1
    now[0] = T0 + 4 * DAY
    chat["spec"]["residency"]["allowedJurisdictions"] = ["MX"]
    chat["metadata"]["generation"] = 3
    await reconcile()  # day 4: nowhere to go
    audit.close()

    assert [change.reason for change in changes] == ["Placed", "Moved", "Unplaceable"]
    moved = changes[1]
    assert (moved.old, moved.new) == ((("br1", 1),), (("scl1", 1),))

    def report(since: dt.datetime, until: dt.datetime) -> list[dict[str, object]]:
        built = Report(since=since, until=until)
        files = sorted(tmp_path.glob("*.jsonl"))
        sources = [SegmentSource(str(f), lambda f=f: iter(f.open("rb"))) for f in files]  # type: ignore[misc]
        assert verify(sources, [signer.public], on_record=built.add).ok
        placements: list[dict[str, object]] = built.document()["placements"]
        return placements

    (everything,) = report(T0 - DAY, T0 + 5 * DAY)
    assert everything["deployment"] == "ml/chat"
    assert everything["jurisdictions"] == ["BR", "CL"]
    assert everything["changes"] == 3
    (before_the_move,) = report(T0 + DAY / 2, T0 + DAY)  # no change inside, br1 in force
    assert before_the_move["jurisdictions"] == ["BR"] and before_the_move["changes"] == 0
    (after_the_move,) = report(T0 + 3 * DAY, T0 + 5 * DAY)
    assert after_the_move["jurisdictions"] == ["CL"]
