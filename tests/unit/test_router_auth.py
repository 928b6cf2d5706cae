"""API keys: who a key belongs to, its residency, and that keys never show."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from soberana.serving.router.auth import Caller, api_keys_from_document
from soberana.serving.router.files import FileFollower

SECRET = "sk-acme-0123456789"


def test_a_key_identifies_its_tenant_and_residency() -> None:
    keys = api_keys_from_document(
        {
            "keys": [
                {"tenant": "acme", "key": SECRET, "residency": ["BR", "CL"]},
                {"tenant": "globex", "sha256": hashlib.sha256(b"sk-globex-secret").hexdigest()},
            ]
        }
    )
    assert keys.identify(SECRET) == Caller("acme", frozenset({"BR", "CL"}))
    assert keys.identify("sk-globex-secret") == Caller("globex", None)
    assert keys.identify(SECRET + "x") is None
    assert keys.identify("") is None


def test_keys_never_show_in_a_repr() -> None:
    keys = api_keys_from_document({"keys": [{"tenant": "acme", "key": SECRET}]})
    assert SECRET not in repr(keys)
    assert hashlib.sha256(SECRET.encode()).hexdigest() not in repr(keys)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"tenant": "acme"}, "exactly one of key or sha256"),
        ({"tenant": "acme", "key": SECRET, "sha256": "0" * 64}, "exactly one of key or sha256"),
        ({"tenant": "acme", "key": "short"}, "at least 16"),
        ({"tenant": "acme", "key": SECRET, "residency": ["Brazil"]}, "residency"),
        ({"tenant": "acme", "key": SECRET, "residency": []}, "residency"),
    ],
)
def test_a_bad_entry_is_refused_without_echoing_the_key(
    entry: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint) as raised:
        api_keys_from_document({"keys": [entry]})
    assert SECRET not in str(raised.value)


def test_one_key_for_two_tenants_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        api_keys_from_document(
            {"keys": [{"tenant": "a", "key": SECRET}, {"tenant": "b", "key": SECRET}]}
        )


def test_a_keys_file_with_broken_yaml_is_reported_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n- {{tenant: acme, key: {SECRET}\n")  # an unclosed mapping
    follower = FileFollower(path, api_keys_from_document, lambda _: None, secret=True)
    with pytest.raises(ValueError, match="is not valid YAML at line") as raised:
        follower.load()
    assert SECRET not in str(raised.value)
    assert raised.value.__suppress_context__  # a traceback will not show the YAML error either
