"""Audit logs: what the writer writes verifies; every kind of tampering is found and located.

Logs are written by the real writer (several segments, sealed on close) into a temporary
directory; each test then edits, deletes, swaps or truncates, and checks that ``verify`` fails
naming the segment file and the line.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from soberana.operator.audit.chain import Chain, ChainState, Signer, digest, parse_time
from soberana.operator.audit.keys import generate, load_public_key, load_signer
from soberana.operator.audit.report import Report, outside
from soberana.operator.audit.verify import SegmentSource, Verification, verify
from soberana.operator.audit.writer import AuditWriter, WriterSettings
from soberana.operator.cli import main

RECORDS = 400


def request(index: int) -> dict[str, Any]:
    jurisdiction = ["BR", "CL"][index % 2]
    return {
        "kind": "request",
        "id": f"r{index}",
        "model": "ml/chat",
        "region": "br-southeast",
        "restrictions": [{"source": "model", "allowed": ["BR", "CL"], "denied": []}],
        "site": f"{jurisdiction.lower()}1",
        "jurisdiction": jurisdiction,
        "tried": [{"site": f"{jurisdiction.lower()}1", "jurisdiction": jurisdiction}],
        "status": 200,
        "refusal": None,
        "bytes_in": 10 + index,
        "bytes_out": 20,
    }


def write_log(directory: Path, signer: Signer, records: int = RECORDS, name: str = "r1") -> None:
    writer = AuditWriter(WriterSettings(directory, name, max_segment_bytes=16 * 1024), signer)
    writer.start()
    for index in range(records):
        assert writer.submit(request, index)
    writer.close()


def sources(directory: Path) -> list[SegmentSource]:
    def lines(path: Path) -> SegmentSource:
        return SegmentSource(str(path), lambda: iter(path.read_bytes().splitlines(keepends=True)))

    return [lines(path) for path in sorted(directory.glob("*.jsonl"))]


def check(directory: Path, signer: Signer, *, allow_open: bool = False) -> Verification:
    return verify(sources(directory), [signer.public], allow_open=allow_open)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def log(tmp_path: Path, signer: Signer) -> Path:
    write_log(tmp_path, signer)
    assert len(list(tmp_path.glob("*.jsonl"))) >= 4  # several segments
    return tmp_path


def segment_lines(directory: Path) -> list[tuple[Path, int]]:
    """(file, 1-based line) of every line of every segment."""
    return [
        (path, number)
        for path in sorted(directory.glob("*.jsonl"))
        for number in range(1, len(path.read_bytes().splitlines()) + 1)
    ]


def names(result: Verification, path: Path, line: int | None) -> bool:
    """Whether the first problem names ``path`` and ``line``, as its place or in its text."""
    problem = result.problems[0]
    text = str(problem)
    if str(path) not in text:
        return False
    if line is None or problem.line == line:
        return True
    return re.search(rf"\bline {line}\b", problem.message) is not None


def test_a_written_log_verifies_with_every_record(log: Path, signer: Signer) -> None:
    seen: list[dict[str, object]] = []
    result = verify(sources(log), [signer.public], on_record=lambda r, f, n: seen.append(dict(r)))
    assert result.ok, result.problems
    summary = result.logs["r1"]
    assert summary.first_segment == 1 and summary.segments == len(list(log.glob("*.jsonl")))
    requests = [record for record in seen if record["kind"] == "request"]
    assert [record["id"] for record in requests] == [f"r{i}" for i in range(RECORDS)]
    assert [record["seq"] for record in seen] == list(range(len(seen)))


def test_another_key_is_refused(log: Path) -> None:
    stranger = Signer(Ed25519PrivateKey.generate())
    result = check(log, stranger)
    assert not result.ok
    assert "not one of the public keys given" in str(result.problems[0])


@pytest.mark.parametrize("seed", range(24))
def test_editing_one_byte_is_found_at_that_record(log: Path, signer: Signer, seed: int) -> None:
    rng = random.Random(seed)
    path, line = rng.choice(segment_lines(log))
    lines = path.read_bytes().splitlines(keepends=True)
    target = bytearray(lines[line - 1])
    position = rng.randrange(len(target))
    replacement = rng.choice([b for b in b'0123456789abcdefxyz{}":, ' if b != target[position]])
    target[position] = replacement
    lines[line - 1] = bytes(target)
    path.write_bytes(b"".join(lines))

    result = check(log, signer)
    assert not result.ok
    assert names(result, path, line), (line, position, result.problems)


@pytest.mark.parametrize("which", ["header", "middle", "last record"])
def test_deleting_a_record_is_found(log: Path, signer: Signer, which: str) -> None:
    path = sorted(log.glob("*.jsonl"))[1]
    lines = path.read_bytes().splitlines(keepends=True)
    line = {"header": 1, "middle": len(lines) // 2, "last record": len(lines) - 1}[which]
    del lines[line - 1]
    path.write_bytes(b"".join(lines))

    result = check(log, signer)
    assert not result.ok
    assert names(result, path, line), result.problems
    if which == "middle":
        assert "deleted" in str(result.problems[0])


def test_deleting_a_checkpoint_is_found(log: Path, signer: Signer) -> None:
    path = sorted(log.glob("*.jsonl"))[1]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    result = check(log, signer)
    assert not result.ok
    assert str(path) in str(result.problems[0])
    assert "without a checkpoint" in str(result.problems[0])


def test_swapping_two_records_is_found(log: Path, signer: Signer) -> None:
    path = sorted(log.glob("*.jsonl"))[2]
    lines = path.read_bytes().splitlines(keepends=True)
    line = len(lines) // 2
    lines[line - 1], lines[line] = lines[line], lines[line - 1]
    path.write_bytes(b"".join(lines))
    result = check(log, signer)
    assert not result.ok
    assert names(result, path, line), result.problems


@pytest.mark.parametrize("seed", range(16))
def test_truncating_a_segment_is_found(log: Path, signer: Signer, seed: int) -> None:
    rng = random.Random(seed)
    files = sorted(log.glob("*.jsonl"))
    path = rng.choice(files)
    data = path.read_bytes()
    cut = rng.randrange(1, len(data) - 1)
    if seed % 2:  # at a line boundary: whole records gone, nothing torn
        cut = data.rfind(b"\n", 0, cut) + 1 or data.find(b"\n") + 1
    path.write_bytes(data[:cut])
    line = data[:cut].count(b"\n") + (0 if data[:cut].endswith(b"\n") else 1)

    result = check(log, signer)
    assert not result.ok
    problem = str(result.problems[0])
    assert str(path) in problem or (
        path != files[-1] and str(files[files.index(path) + 1]) in problem and str(path) in problem
    ), problem
    if not data[:cut].endswith(b"\n"):
        assert names(result, path, line)


def test_removing_a_whole_segment_in_the_middle_is_found(log: Path, signer: Signer) -> None:
    files = sorted(log.glob("*.jsonl"))
    files[2].unlink()
    result = check(log, signer)
    assert not result.ok
    assert str(files[3]) in str(result.problems[0])
    assert "missing" in str(result.problems[0])


def test_an_open_newest_segment_passes_only_when_allowed(log: Path, signer: Signer) -> None:
    newest = sorted(log.glob("*.jsonl"))[-1]
    lines = newest.read_bytes().splitlines(keepends=True)
    newest.write_bytes(b"".join(lines[:-1]))  # as if its writer were still running
    assert not check(log, signer).ok
    allowed = check(log, signer, allow_open=True)
    assert allowed.ok, allowed.problems
    assert allowed.logs["r1"].open_records == len(lines) - 1


def test_a_restart_seals_the_segment_a_crash_left_open(log: Path, signer: Signer) -> None:
    newest = sorted(log.glob("*.jsonl"))[-1]
    lines = newest.read_bytes().splitlines(keepends=True)
    newest.write_bytes(b"".join(lines[:-1]) + b'{"kind":"request","id":"to')  # torn write
    write_log(log, signer, records=5)

    seen: list[dict[str, object]] = []
    result = verify(sources(log), [signer.public], on_record=lambda r, f, n: seen.append(dict(r)))
    assert result.ok, result.problems
    recovered = [record for record in seen if record["kind"] == "recovered"]
    assert len(recovered) == 1 and recovered[0]["torn_bytes"] == len(b'{"kind":"request","id":"to')
    assert sum(1 for record in seen if record["kind"] == "request") == RECORDS + 5


def test_a_new_key_after_a_restart_needs_both_public_keys(log: Path, signer: Signer) -> None:
    rotated = Signer(Ed25519PrivateKey.generate())
    write_log(log, rotated, records=3)
    assert verify(sources(log), [signer.public, rotated.public]).ok
    assert not verify(sources(log), [signer.public]).ok


def test_chain_fields_cannot_be_set_by_a_record(signer: Signer) -> None:
    chain = Chain(signer, ChainState("x"))
    chain.open_segment("2026-12-05T00:00:00.000Z")
    with pytest.raises(ValueError, match="seq"):
        chain.append({"kind": "request", "seq": 7})
    line = chain.append({"kind": "request", "time": "t"})
    assert json.loads(line)["seq"] == 1 and chain.state.head == digest(line)


def test_outside_restrictions_looks_at_every_site_that_processed_it() -> None:
    record = request(0)
    assert outside(record) == []
    record["tried"] = [{"site": "us1", "jurisdiction": "US"}, *record["tried"]]
    assert len(outside(record)) == 1 and "us1 (US)" in outside(record)[0]
    denied = {**request(1), "restrictions": [{"source": "tenant", "allowed": [], "denied": ["CL"]}]}
    assert "tenant" in outside(denied)[0]
    unknown = {**request(0), "jurisdiction": None, "tried": []}
    assert outside(unknown)


@pytest.mark.parametrize("order", ["as written", "reversed"])  # several operator logs
def test_placements_answer_where_a_model_could_have_run_in_a_window(order: str) -> None:
    report = Report(since=_t("2026-12-02"), until=_t("2026-12-04"))

    def placed(day: str, old: list[str], new: list[str]) -> dict[str, object]:
        where = {"br1": "BR", "scl1": "CL", "us1": "US", "mx1": "MX"}
        return {
            "kind": "placement",
            "time": f"2026-12-{day}T00:00:00.000Z",
            "deployment": "ml/chat",
            "old": [{"site": s, "jurisdiction": where[s], "replicas": 1} for s in old],
            "new": [{"site": s, "jurisdiction": where[s], "replicas": 1} for s in new],
        }

    records = [
        placed("01", [], ["us1"]),  # before the window: replaced by the next
        {**placed("01", ["us1"], ["br1"]), "time": "2026-12-01T00:00:01.000Z"},  # in force
        placed("03", ["br1"], ["scl1"]),
        placed("05", ["scl1"], ["mx1"]),  # after it
    ]
    for record in records if order == "as written" else reversed(records):
        report.add(record, "f", 1)
    (entry,) = report.document()["placements"]
    assert entry["jurisdictions"] == ["BR", "CL"]
    assert entry["changes"] == 1


def _t(text: str) -> dt.datetime:
    return parse_time(text)


def test_cli_keygen_verify_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    result = runner.invoke(
        main, ["audit", "keygen", "--private-key", str(private), "--public-key", str(public)]
    )
    assert result.exit_code == 0, result.output
    assert private.stat().st_mode & 0o077 == 0
    signer = load_signer(private)
    assert load_public_key(public) == signer.public
    logs = tmp_path / "logs"
    write_log(logs, signer, records=50)

    ok = runner.invoke(main, ["audit", "verify", str(logs), "--public-key", str(public)])
    assert ok.exit_code == 0, ok.output
    assert "ok: log r1" in ok.output

    report = runner.invoke(main, ["audit", "report", str(logs), "-o", "json"])
    assert report.exit_code == 0, report.output
    document = json.loads(report.output)
    assert document["requests"] == 50 and document["verified"]
    assert document["outside_restrictions"]["count"] == 0
    assert {(s["jurisdiction"], s["requests"]) for s in document["served"]} == {
        ("BR", 25),
        ("CL", 25),
    }
    table = runner.invoke(main, ["audit", "report", str(logs)])
    assert "Requests processed outside their residency restrictions: 0" in table.output

    first = sorted(logs.glob("*.jsonl"))[0]
    lines = first.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"status":200', b'"status":201')
    first.write_bytes(b"".join(lines))
    broken = runner.invoke(main, ["audit", "verify", str(logs), "--public-key", str(public)])
    assert broken.exit_code == 1
    assert f"{first} line 5" in broken.output and "line 4" in broken.output


def test_cli_report_exits_non_zero_on_a_record_outside_its_restrictions(tmp_path: Path) -> None:
    signer_path, public = tmp_path / "k.pem", tmp_path / "k.pub"
    signer = generate(signer_path, public)
    writer = AuditWriter(WriterSettings(tmp_path / "logs", "r1"), signer)
    writer.start()
    writer.submit(request, 0)
    writer.submit(lambda _: {**request(1), "jurisdiction": "US", "site": "us1"}, None)
    writer.close()
    result = CliRunner().invoke(main, ["audit", "report", str(tmp_path / "logs")])
    assert result.exit_code == 1
    assert "Requests processed outside their residency restrictions: 1" in result.output
    assert "us1 (US)" in result.output


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("precious")
    result = CliRunner().invoke(
        main,
        ["audit", "keygen", "--private-key", str(tmp_path / "k.pem"), "--public-key",
         str(tmp_path / "k.pub")],
    )  # fmt: skip
    assert result.exit_code != 0 and "exists" in result.output
    assert (tmp_path / "k.pem").read_text() == "precious"


def test_records_dropped_from_a_full_queue_leave_a_gap_record(
    tmp_path: Path, signer: Signer
) -> None:
    writer = AuditWriter(WriterSettings(tmp_path, "r1", max_queue=5, headroom=2), signer)
    accepted = [writer.submit(request, index) for index in range(10)]  # before the thread runs
    assert accepted == [True] * 7 + [False] * 3
    assert writer.dropped == 3
    assert writer.refusal() is not None and "behind" in writer.refusal()  # type: ignore[operator]
    writer.start()
    writer.close()
    report = Report()
    assert verify(sources(tmp_path), [signer.public], on_record=report.add).ok
    assert report.gaps == 3 and report.requests == 7
    assert report.document()["lost_records"] == 3


@pytest.mark.parametrize("command", ["router", "operator"])
def test_audit_flags_are_checked_before_anything_starts(tmp_path: Path, command: str) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("sites: []\nmodels: []\n")
    first = ["router", "--routes", str(routes)] if command == "router" else ["operator"]
    runner = CliRunner()
    alone = runner.invoke(main, [*first, "--audit-dir", str(tmp_path / "a")])
    assert alone.exit_code == 2 and "go together" in alone.output
    key = runner.invoke(
        main, [*first, "--audit-dir", str(tmp_path / "a"), "--audit-signing-key", str(routes)]
    )
    assert key.exit_code == 2 and "soberana audit keygen" in key.output
    generate(tmp_path / "k.pem", tmp_path / "k.pub")
    blocked = tmp_path / "file"
    blocked.write_text("")
    directory = runner.invoke(
        main, [*first, "--audit-dir", str(blocked / "sub"), "--audit-signing-key",
               str(tmp_path / "k.pem")],
    )  # fmt: skip
    assert directory.exit_code == 2 and f"--audit-dir {blocked / 'sub'}" in directory.output
