"""Verify audit logs: every chain link, every number, every checkpoint's signature.

:func:`verify` reads segments in the order given (per log, by ascending segment number: sorted
file names do), groups them by the log named in their headers, and checks in each log that:

- every line is complete, is JSON, and is in the canonical form the writer writes;
- ``seq`` runs on without gaps (a deleted record shows as a gap, a swapped one as out of order);
- ``prev`` is the SHA-256 of the line before (an edited record shows on the next line);
- segments follow one another without gaps, each opened by a header and sealed by a checkpoint
  whose signature is valid under the header's key, and, when keys are given, one of them; a
  truncated segment lacks its checkpoint. Only a log's newest segment may be open, and only when
  ``allow_open``: the records in it are chained but not yet signed.

It stops at a log's first problem, which names the file, the line and what is wrong. Pure: it
reads the lines it is handed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from soberana.operator.audit.chain import (
    GENESIS,
    KINDS,
    checkpoint_signature_ok,
    digest,
    encode,
    key_id,
)


@dataclass(frozen=True)
class SegmentSource:
    """One segment file: its name (as reports show it) and its lines, newlines included."""

    name: str
    lines: Callable[[], Iterator[bytes]]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based; None: about the file as a whole
    message: str
    log: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file} line {self.line}"
        return f"{where}: {self.message}"


@dataclass
class LogSummary:
    """What was checked of one log."""

    log: str
    segments: int = 0
    records: int = 0  # lines, headers and checkpoints included
    first_segment: int = 0
    last_segment: int = 0
    open_records: int = 0  # records of the newest segment not yet sealed
    keys: set[str] = field(default_factory=set)
    problem: Problem | None = None


@dataclass
class Verification:
    logs: dict[str, LogSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # the first of each log, and files

    @property
    def ok(self) -> bool:
        return not self.problems


class _BrokenError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.message = message


@dataclass
class _LogState:
    summary: LogSummary
    segment: int = 0
    seq: int | None = None
    head: str | None = None
    sealed: bool = True
    open_file: str = ""


def verify(
    segments: Iterable[SegmentSource],
    public_keys: Collection[bytes] = (),
    *,
    allow_open: bool = False,
    on_record: Callable[[Mapping[str, Any], str, int], None] | None = None,
) -> Verification:
    """Check ``segments``; ``on_record(record, file, line)`` sees each record of every segment
    that checks out so far (a caller that needs only verified records keeps them until the
    verification is ok)."""
    result = Verification()
    states: dict[str, _LogState] = {}
    trusted = {key_id(key): key for key in public_keys}
    for source in segments:
        lines = source.lines()
        first = next(lines, b"")
        log = _log_of(first)
        if log is None:
            result.problems.append(
                Problem(source.name, 1, "not an audit segment: the first line is no header")
            )
            continue
        state = states.get(log)
        if state is None:
            state = states[log] = _LogState(LogSummary(log))
            result.logs[log] = state.summary
        if state.summary.problem is not None:
            continue  # past this log's first problem: nothing after it can be trusted
        try:
            if not state.sealed:
                raise _BrokenError(
                    None,
                    f"segment {state.segment} ({state.open_file}) ends without a checkpoint, yet "
                    f"segment files follow it: it was truncated",
                )
            _check_segment(source.name, first, lines, state, trusted, on_record)
        except _BrokenError as broken:
            state.summary.problem = Problem(source.name, broken.line, broken.message, log)
            result.problems.append(state.summary.problem)
    for state in states.values():
        if state.summary.problem is None and not state.sealed and not allow_open:
            state.summary.problem = Problem(
                state.open_file,
                None,
                f"segment {state.segment} is not sealed by a checkpoint: it was truncated, or "
                f"its writer has not closed it yet ({state.summary.open_records} records; "
                f"--allow-open accepts an open newest segment)",
                state.summary.log,
            )
            result.problems.append(state.summary.problem)
    return result


def _log_of(first: bytes) -> str | None:
    try:
        header = json.loads(first)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("kind") != "segment":
        return None
    log = header.get("log")
    return log if isinstance(log, str) else None


def _check_segment(
    name: str,
    first: bytes,
    rest: Iterator[bytes],
    state: _LogState,
    trusted: Mapping[str, bytes],
    on_record: Callable[[Mapping[str, Any], str, int], None] | None,
) -> None:
    summary = state.summary
    public = b""
    lines_in_segment = 0
    number = 0
    for number, raw in enumerate(_chain(first, rest), start=1):
        record = _parse(raw, number)
        seq, prev, kind = record.get("seq"), record.get("prev"), record.get("kind")
        if not isinstance(seq, int) or not isinstance(prev, str) or kind not in KINDS:
            raise _BrokenError(number, "lacks a valid seq, prev or kind: altered")
        if state.sealed and number > 1:
            raise _BrokenError(number, "a record after the segment's checkpoint: appended later")
        if number == 1:
            public = _open(record, state, trusted, number)
        elif kind == "segment":
            raise _BrokenError(number, "a segment header inside a segment: segments were spliced")
        _link(record, seq, prev, state, number)
        if kind == "checkpoint":
            _check_checkpoint(record, public, trusted, state, lines_in_segment, number)
            lines_in_segment = 0
        else:
            lines_in_segment += 1
        state.head = digest(raw.removesuffix(b"\n"))
        summary.records += 1
        if on_record is not None:
            on_record(record, name, number)
    if number == 0:
        raise _BrokenError(None, "empty segment file")
    if not state.sealed:
        state.open_file = name
        summary.open_records = lines_in_segment


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _parse(raw: bytes, number: int) -> dict[str, Any]:
    if not raw.endswith(b"\n"):
        raise _BrokenError(
            number, f"incomplete last line ({len(raw)} bytes without a newline): truncated"
        )
    body = raw[:-1]
    try:
        record = json.loads(body)
    except ValueError:
        raise _BrokenError(number, "not a JSON record: altered or torn") from None
    if not isinstance(record, dict):
        raise _BrokenError(number, "not a JSON object: altered")
    if encode(record) != body:
        raise _BrokenError(number, "not in the canonical form the writer writes: altered")
    return record


def _open(
    header: Mapping[str, Any], state: _LogState, trusted: Mapping[str, bytes], number: int
) -> bytes:
    segment = header.get("segment")
    key = header.get("key")
    if header.get("kind") != "segment" or not isinstance(segment, int):
        raise _BrokenError(number, "the first line is not a segment header: altered")
    if state.segment and segment != state.segment + 1:
        expected = state.segment + 1
        what = "missing" if segment > expected else "out of order or repeated"
        raise _BrokenError(number, f"segment {segment} follows segment {state.segment}: {what}")
    if not state.segment and segment == 1 and header.get("prev") != GENESIS:
        raise _BrokenError(number, "the log's first segment does not start the chain (prev)")
    public = _key(key, trusted, number, f"segment {segment} is opened")
    summary = state.summary
    if not summary.segments:
        summary.first_segment = segment
    summary.segments += 1
    summary.last_segment = segment
    summary.keys.add(key_id(public))
    state.segment = segment
    state.sealed = False
    return public


def _key(key: Any, trusted: Mapping[str, bytes], number: int, what: str) -> bytes:
    """The raw public key a header or checkpoint names, checked against the trusted ones."""
    try:
        assert isinstance(key, dict)
        public = base64.b64decode(str(key["ed25519"]), validate=True)
        assert len(public) == 32 and key_id(public) == key["id"]
    except (AssertionError, KeyError, binascii.Error):
        raise _BrokenError(number, "the key named here is malformed: altered") from None
    if trusted and key["id"] not in trusted:
        raise _BrokenError(
            number,
            f"{what} with key {key['id']}, which is not one of the public keys given "
            f"({', '.join(sorted(trusted))})",
        )
    return public


def _link(record: Mapping[str, Any], seq: int, prev: str, state: _LogState, number: int) -> None:
    if state.seq is not None and seq != state.seq:
        if seq > state.seq:
            missing = (
                f"record {state.seq}"
                if seq == state.seq + 1
                else f"records {state.seq} to {seq - 1}"
            )
            raise _BrokenError(
                number, f"seq {seq} where {state.seq} was due: {missing} deleted or moved"
            )
        raise _BrokenError(
            number, f"seq {seq} where {state.seq} was due: records reordered or repeated"
        )
    if state.head is not None and prev != state.head:
        where = f"line {number - 1}" if number > 1 else "the previous segment's last line"
        raise _BrokenError(
            number,
            f"prev is not the SHA-256 of {where} (seq {seq - 1}): that record was altered (or "
            f"this one's prev was)",
        )
    state.seq = seq + 1


def _check_checkpoint(
    checkpoint: Mapping[str, Any],
    header_key: bytes,
    trusted: Mapping[str, bytes],
    state: _LogState,
    lines_in_segment: int,
    number: int,
) -> None:
    public = _key(checkpoint.get("key"), trusted, number, f"segment {state.segment} is sealed")
    if public != header_key and not trusted:
        raise _BrokenError(
            number,
            "the checkpoint is signed with another key than the segment's header names (a "
            "writer restarted with a new key does that): give the public keys with --public-key",
        )
    state.summary.keys.add(key_id(public))
    if not checkpoint_signature_ok(checkpoint, public):
        raise _BrokenError(number, "the checkpoint's signature is not valid: altered or forged")
    if checkpoint.get("segment") != state.segment or checkpoint.get("lines") != lines_in_segment:
        raise _BrokenError(number, "the checkpoint does not match its segment: spliced")
    if checkpoint.get("log") != state.summary.log:
        raise _BrokenError(number, "the checkpoint belongs to another log: spliced")
    state.sealed = True
