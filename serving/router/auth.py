"""API keys: who a bearer key belongs to, and where that tenant's requests may be processed.

The keys file (YAML, typically a mounted Secret) lists each key, or only its SHA-256 in hex so
that the file holds no usable secret::

    keys:
    - {tenant: acme, key: "sk-acme-1", residency: [BR, CL]}
    - {tenant: globex, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}

A presented key is hashed and compared with every entry in constant time, so neither a match
nor its position shows in the response time. Keys appear in no ``repr``, log or error message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from soberana.operator.core.api.base import Jurisdiction, require_unique


@dataclass(frozen=True)
class Caller:
    """The tenant a key belongs to, and the jurisdictions bound to it (None: any)."""

    tenant: str
    residency: frozenset[str] | None = None


@dataclass(frozen=True)
class _Entry:
    digest: bytes = field(repr=False)
    caller: Caller


@dataclass(frozen=True)
class ApiKeys:
    entries: tuple[_Entry, ...] = ()

    def identify(self, presented: str) -> Caller | None:
        """The caller whose key is ``presented``, or None; takes the same time either way."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: Caller | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.caller
        return found


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant: str = Field(min_length=1, max_length=253)
    key: str | None = Field(None, min_length=16, repr=False)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", repr=False)
    residency: list[Jurisdiction] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> _KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"tenant {self.tenant}: give exactly one of key or sha256")
        if self.residency is not None:
            require_unique(self.residency, f"residency of tenant {self.tenant}")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.encode()).digest()
        assert self.sha256 is not None
        return bytes.fromhex(self.sha256)


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    keys: list[_KeyEntry] = Field(default_factory=list)


def api_keys_from_document(document: Mapping[str, Any] | None) -> ApiKeys:
    """Parse a keys document; raises pydantic's ValidationError, which never shows the keys."""
    parsed = _KeysFile.model_validate(document or {})
    digests = [entry.digest() for entry in parsed.keys]
    if len(set(digests)) != len(digests):
        raise ValueError("the API keys file lists one key more than once")
    return ApiKeys(
        tuple(
            _Entry(
                digest,
                Caller(
                    entry.tenant,
                    None if entry.residency is None else frozenset(entry.residency),
                ),
            )
            for digest, entry in zip(digests, parsed.keys, strict=True)
        )
    )
