"""The audit log's format: JSON lines in segments, hash-chained, each segment sealed by a signature.

A log is a sequence of segments (files); a segment is a sequence of lines, each one record as
canonical JSON (sorted keys, no spaces, ASCII) followed by ``\\n``. Every record carries:

- ``seq``: its number in the whole log, from 0, without gaps;
- ``prev``: the SHA-256 (hex) of the previous line's bytes, without its newline; the log's first
  record has :data:`GENESIS`, a segment's first the hash of the previous segment's last line;
- ``kind``: ``segment`` (the first line of each segment: the log's name, the segment's number and
  the public key that seals it), ``request``, ``placement``, ``gap`` (records that were lost, and
  why), ``recovered`` (what a restart found), and ``checkpoint`` (the last line of a sealed
  segment: an Ed25519 signature over the rest of that line, whose ``prev`` covers, link by link,
  every line before it). Headers and checkpoints name the public key (``key``); a checkpoint is
  normally signed by its header's key, but a writer restarted with a new key seals the segment
  it found open with the new one.

Pure: builds lines and checks signatures, no I/O.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FORMAT = 1
GENESIS = "0" * 64
SIGNED_PREFIX = b"soberana-audit-checkpoint-v1\n"
"""Prepended to a checkpoint's bytes before signing, so that the signature means nothing else."""

CHAIN_FIELDS = frozenset({"seq", "prev", "kind"})
KINDS = frozenset({"segment", "request", "placement", "gap", "recovered", "checkpoint"})


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def encode(record: Mapping[str, Any]) -> bytes:
    """A record's one canonical form: the bytes of its line, without the newline."""
    return _ENCODER.encode(record).encode()


def digest(line: bytes) -> str:
    """The hash the next record holds as ``prev``: of the line's bytes without its newline."""
    return hashlib.sha256(line).hexdigest()


_second: tuple[int, str] = (-1, "")  # the last second formatted, as most records share it


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, such as ``2026-12-05T19:20:01.123Z``."""
    global _second  # noqa: PLW0603  (a one-entry cache)
    second = int(epoch // 1)
    cached, prefix = _second
    if second != cached:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, prefix)
    return f"{prefix}.{min(999, int((epoch - second) * 1000)):03d}Z"


def parse_time(text: str) -> dt.datetime:
    """A record's time, or a ``--since``/``--until`` bound: RFC 3339, a date, UTC if no zone."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(public).hexdigest()[:16]


class Signer:
    """An Ed25519 private key, with the public half that a segment's header carries."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public = public_bytes(private_key.public_key())
        self.key_id = key_id(self.public)

    def key_record(self) -> dict[str, str]:
        """The key as headers and checkpoints name it."""
        return {"id": self.key_id, "ed25519": base64.b64encode(self.public).decode()}

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(SIGNED_PREFIX + message)).decode()


def checkpoint_signature_ok(checkpoint: Mapping[str, Any], public: bytes) -> bool:
    """Whether ``checkpoint``'s ``sig`` signs the rest of it with ``public``."""
    signature = checkpoint.get("sig")
    if not isinstance(signature, str):
        return False
    unsigned = {name: value for name, value in checkpoint.items() if name != "sig"}
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(raw, SIGNED_PREFIX + encode(unsigned))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class ChainState:
    """Where a log stands: what the next record links to."""

    log: str
    segment: int = 0  # the current segment's number; 0 before the first
    seq: int = 0  # the next record's seq
    head: str = GENESIS  # the hash of the last line
    segment_lines: int = 0  # lines in the current segment so far
    segment_first_seq: int = 0


class Chain:
    """Links records into lines: numbers them, chains them, opens and seals segments."""

    def __init__(self, signer: Signer, state: ChainState) -> None:
        self.signer = signer
        self.state = state

    def _line(self, body: Mapping[str, Any]) -> bytes:
        state = self.state
        extra = CHAIN_FIELDS.intersection(body) - {"kind"}
        if extra:
            raise ValueError(f"a record may not set {sorted(extra)}: the chain sets them")
        line = encode({**body, "seq": state.seq, "prev": state.head})
        state.head = digest(line)
        state.seq += 1
        state.segment_lines += 1
        return line

    def open_segment(self, time: str) -> bytes:
        """The header line of the next segment."""
        state = self.state
        state.segment += 1
        state.segment_lines = 0
        state.segment_first_seq = state.seq
        return self._line(
            {
                "kind": "segment",
                "format": FORMAT,
                "log": state.log,
                "segment": state.segment,
                "time": time,
                "key": self.signer.key_record(),
            }
        )

    def append(self, body: Mapping[str, Any]) -> bytes:
        if body.get("kind") not in KINDS - {"segment", "checkpoint"}:
            raise ValueError(f"not a record kind: {body.get('kind')!r}")
        return self._line(body)

    def seal(self, time: str) -> bytes:
        """The checkpoint line that closes the current segment."""
        state = self.state
        unsigned = {
            "kind": "checkpoint",
            "log": state.log,
            "segment": state.segment,
            "time": time,
            "first_seq": state.segment_first_seq,
            "lines": state.segment_lines,
            "key": self.signer.key_record(),
            "seq": state.seq,
            "prev": state.head,
        }
        signature = self.signer.sign(encode(unsigned))
        line = encode({**unsigned, "sig": signature})
        state.head = digest(line)
        state.seq += 1
        state.segment_lines += 1
        return line
