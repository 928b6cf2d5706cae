"""Append audit records to segment files from a background thread, never blocking the caller.

:meth:`AuditWriter.submit` puts a record's builder on a bounded queue (a deque append); the
writer thread wakes every ``flush_interval_s`` (or sooner, when the queue fills), builds and
chains the records, and writes them with one ``write`` per batch to the newest segment,
``<dir>/<log>-<segment, 8 digits>.jsonl``. A segment is sealed with a signed checkpoint and a new
one opened when it reaches ``max_segment_bytes`` or ``max_segment_age_s``, and on :meth:`close`.

Durability (fsync policy): a batch is in the kernel once written, so a crash of the process
loses at most the records still queued (``flush_interval_s`` worth); the segment file is fsynced
every ``fsync_interval_s`` when something was written, and always before it is sealed and closed
(and its directory after a new segment is created), so a crash of the host loses at most
``fsync_interval_s`` of records. On start, a segment left open by a crash is sealed: a torn last
line is cut off, and a ``recovered`` record says how many bytes were.

A write that fails (a full disk, a lost volume) keeps the chained lines in memory and retries
every ``retry_interval_s``; meanwhile :meth:`refusal` says why, for callers that fail closed.
When the queue reaches ``max_queue`` records, :meth:`refusal` says so too; records beyond
``max_queue + headroom`` are dropped and counted, and a ``gap`` record says how many were lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from soberana.operator.audit.chain import (
    Chain,
    ChainState,
    Signer,
    digest,
    format_time,
)

log = logging.getLogger(__name__)

LOG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SEGMENT_FILE = re.compile(r"^(?P<log>.+)-(?P<segment>\d{8})\.jsonl$")
_WAKE_AT = 256  # queued records that wake the writer before its interval
_BATCH = 32  # records chained between writes: each write lets the event loop's thread run

Builder = Callable[[Any], Mapping[str, Any]]
"""Turns a submitted item into a record's fields (``kind`` included; ``time`` is added)."""


class Exporter(Protocol):
    """Somewhere else every written line also goes, such as OTLP logs (best effort)."""

    def export(self, lines: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WriterSettings:
    directory: Path
    log: str  # this log's name: one writer per log, such as the router pod's name
    max_segment_bytes: int = 64 * 1024 * 1024
    max_segment_age_s: float = 300.0
    flush_interval_s: float = 0.05
    fsync_interval_s: float = 1.0
    retry_interval_s: float = 1.0
    max_queue: int = 65_536
    headroom: int = 8_192  # records accepted past max_queue (answers in flight) before dropping

    def __post_init__(self) -> None:
        if not LOG_ID.match(self.log):
            raise ValueError(
                f"audit log name {self.log!r}: letters, digits, '.', '_' and '-', at most 100"
            )
        if self.max_segment_bytes < 4096 or self.max_segment_age_s <= 0:
            raise ValueError("max_segment_bytes >= 4096 and max_segment_age_s > 0")
        if self.flush_interval_s <= 0 or self.max_queue < 1 or self.headroom < 0:
            raise ValueError("flush_interval_s > 0, max_queue >= 1 and headroom >= 0")


def segment_path(directory: Path, log_name: str, segment: int) -> Path:
    return directory / f"{log_name}-{segment:08d}.jsonl"


class AuditWriter:
    """One log's writer: a queue in front, a thread behind."""

    def __init__(
        self,
        settings: WriterSettings,
        signer: Signer,
        exporters: Sequence[Exporter] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._signer = signer
        self._exporters = exporters
        self._clock = clock
        self._queue: deque[tuple[float, Builder, Any]] = deque()
        self._limit = settings.max_queue + settings.headroom
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._drop_lock = threading.Lock()
        self._dropped_unrecorded = 0
        # counters, read by metrics
        self.written = 0
        self.dropped = 0
        self.write_failures = 0
        self.failure: str | None = None  # why writing fails now; None while it works
        # the current segment, touched by the writer thread only (and start/close)
        self._chain = Chain(signer, ChainState(settings.log))
        self._descriptor: int | None = None
        self._size = 0  # bytes of the current segment known to be written
        self._created = False  # the current segment's file exists
        self._buffer = bytearray()  # chained lines not yet written to it
        self._sealed = False  # the buffer ends with the current segment's checkpoint
        self._opened_at = 0.0
        self._synced = True
        self._last_sync = 0.0

    # ------------------------------------------------------------------ callers' side

    def submit(self, build: Builder, item: Any, at: float | None = None) -> bool:
        """Queue a record (built on the writer thread); False when it was dropped."""
        if len(self._queue) >= self._limit:
            with self._drop_lock:
                self._dropped_unrecorded += 1
                self.dropped += 1
            return False
        self._queue.append((self._clock() if at is None else at, build, item))
        if len(self._queue) >= _WAKE_AT:
            self._wake.set()
        return True

    def refusal(self) -> str | None:
        """Why records cannot be kept now, or None."""
        failure = self.failure
        if failure is not None:
            return f"the audit log cannot be written: {failure}"
        if len(self._queue) >= self.settings.max_queue:
            return f"the audit log is behind ({len(self._queue)} records waiting)"
        return None

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Pick up where the log's last segment left off, open a new one, start the thread."""
        self.settings.directory.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._open_next()
        self._write_out()
        self._thread = threading.Thread(target=self._run, name="soberana-audit", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, seal the segment, stop the thread."""
        self._stopping = True
        self._wake.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("the audit writer did not finish within %.0fs", timeout_s)
        for exporter in self._exporters:
            exporter.close()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False if it was not in time."""
        deadline = time.monotonic() + timeout_s
        target = self.written + len(self._queue)
        while time.monotonic() < deadline:
            if self.written >= target and not self._buffer:
                return True
            self._wake.set()
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        settings = self.settings
        while True:
            stopping = self._stopping
            if not stopping and self.failure:  # a full queue does not hasten the retry
                self._stop.wait(settings.retry_interval_s)
            elif not stopping:
                self._wake.wait(settings.flush_interval_s)
                self._wake.clear()
            try:
                self._drain()
                now = time.monotonic()
                if now - self._opened_at >= settings.max_segment_age_s:
                    self._seal()
                if not self._synced and (
                    stopping or now - self._last_sync >= settings.fsync_interval_s
                ):
                    self._sync()
                if stopping:
                    self._seal(final=True)
                    return
                self._recovered()
            except OSError as error:
                self._failed(error)
                if stopping:
                    log.error("the audit log could not be sealed on the way out: %s", error)
                    return
            except Exception:
                log.exception("the audit writer failed")
                self._failed(RuntimeError("internal error, see the log"))
                if stopping:
                    return

    def _failed(self, error: Exception) -> None:
        self.write_failures += 1
        message = f"{type(error).__name__}: {error}"
        if self.failure != message:
            log.error(
                "ALARM: audit records cannot be written to %s: %s", self.settings.directory, message
            )
        self.failure = message
        if self._descriptor is not None:  # reopened, and cut back to what was written, on retry
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning("audit records are written again to %s", self.settings.directory)
            self.failure = None

    def _drain(self) -> None:
        self._write_out()  # what a failed write left
        queue = self._queue
        while queue:
            lines: list[bytes] = []
            with self._drop_lock:
                dropped, self._dropped_unrecorded = self._dropped_unrecorded, 0
            if dropped:
                gap = {"kind": "gap", "dropped": dropped, "reason": "the audit queue was full"}
                self._append(gap, self._clock(), lines)
            for _ in range(min(len(queue), _BATCH)):
                at, build, item = queue.popleft()
                self._append(build(item), at, lines)
            self._write_out()
            self._export(lines)

    def _append(self, fields: Mapping[str, Any], at: float, lines: list[bytes]) -> None:
        body = dict(fields)
        body["time"] = format_time(at)
        line = self._chain.append(body)
        lines.append(line)
        self._buffer += line
        self._buffer += b"\n"
        self.written += 1
        if self._size + len(self._buffer) >= self.settings.max_segment_bytes:
            self._seal()

    def _export(self, lines: Sequence[bytes]) -> None:
        for exporter in self._exporters:
            try:
                exporter.export(lines)
            except Exception:
                log.exception("an audit exporter failed; the segment files are unaffected")

    def _seal(self, *, final: bool = False) -> None:
        """Close the current segment with its checkpoint (unless it holds only its header)."""
        if self._sealed:  # sealed already, its write failed: finish it
            self._write_out(open_next=not final)
            return
        if self._chain.state.segment_lines <= 1 and not final:
            self._opened_at = time.monotonic()
            return
        line = self._chain.seal(format_time(self._clock()))
        self._buffer += line + b"\n"
        self._sealed = True
        self._export([line])
        if final:
            self._write_out(open_next=False)
        else:
            self._write_out()

    def _write_out(self, *, open_next: bool = True) -> None:
        """Write the buffer to the current segment; after a checkpoint, go on to the next."""
        while True:
            if self._buffer:
                self._write_buffer()
            if not self._sealed:
                return
            self._sync()
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None
            self._sealed = False
            if not open_next:
                return
            self._open_next()

    def _write_buffer(self) -> None:
        path = segment_path(self.settings.directory, self.settings.log, self._chain.state.segment)
        if self._descriptor is None:
            new = not self._created
            flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if new else 0)
            self._descriptor = os.open(path, flags, 0o640)
            self._created = True
            if new:
                self._sync_directory()
            else:  # after a failure: drop whatever part of a batch did reach the file
                os.ftruncate(self._descriptor, self._size)
            os.lseek(self._descriptor, self._size, os.SEEK_SET)
        view = memoryview(self._buffer)
        while view:
            written = os.write(self._descriptor, view)
            view = view[written:]
            self._size += written
        del view
        self._buffer.clear()
        self._synced = False

    def _open_next(self) -> None:
        self._size = 0
        self._created = False
        header = self._chain.open_segment(format_time(self._clock()))
        self._buffer += header + b"\n"
        self._opened_at = time.monotonic()
        self._export([header])

    def _sync(self) -> None:
        if self._descriptor is not None and not self._synced:
            os.fsync(self._descriptor)
        self._synced = True
        self._last_sync = time.monotonic()

    def _sync_directory(self) -> None:
        descriptor = os.open(self.settings.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    # ------------------------------------------------------------------ a restart

    def _recover(self) -> None:
        """Continue the chain of this log's newest segment, sealing it if a crash left it open."""
        settings = self.settings
        newest = max(
            (
                int(match["segment"])
                for match in map(_SEGMENT_FILE.match, os.listdir(settings.directory))
                if match is not None and match["log"] == settings.log
            ),
            default=0,
        )
        if not newest:
            return
        path = segment_path(settings.directory, settings.log, newest)
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        torn = len(data) - len(complete)
        lines = complete.splitlines()
        if not lines:
            raise ValueError(f"{path}: an audit segment without a complete line; move it away")
        last = _record(lines[-1], path)
        header = _record(lines[0], path)
        state = self._chain.state
        state.segment = newest
        state.seq = int(last["seq"]) + 1
        state.head = digest(lines[-1])
        state.segment_lines = len(lines)
        state.segment_first_seq = int(header["seq"])
        if last.get("kind") == "checkpoint":
            return
        log.warning("sealing audit segment %s, left open (%d torn bytes)", path, torn)
        self._size = len(complete)
        self._created = True
        self._buffer += (
            self._chain.append(
                {
                    "kind": "recovered",
                    "time": format_time(self._clock()),
                    "torn_bytes": torn,
                    "reason": "the writer stopped without sealing this segment",
                }
            )
            + b"\n"
        )
        self._seal(final=True)


def _record(line: bytes, path: Path) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        raise ValueError(f"{path}: not an audit segment ({line[:80]!r}); move it away") from None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        raise ValueError(f"{path}: not an audit segment; move it away")
    return record
