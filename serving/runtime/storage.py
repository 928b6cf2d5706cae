"""Where a model URI is on the replica's local file system.

The runtime never downloads anything: every URI names files that are already mounted.

- ``file:///<path>`` is ``/<path>``, on every node of the site.
- ``pvc://<claim>/<path>`` is ``<root>/pvc/<claim>/<path>``: the claim mounted at
  ``<root>/pvc/<claim>`` in the Ray worker pods.
- ``s3://<bucket>/<path>`` is ``<root>/s3/<bucket>/<path>``: the bucket mounted (or synced) at
  ``<root>/s3/<bucket>``.

``<root>`` is ``$SOBERANA_MODEL_ROOT``, ``/models`` when unset.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

MODEL_ROOT_ENV = "SOBERANA_MODEL_ROOT"
DEFAULT_MODEL_ROOT = Path("/models")

_MOUNTED_SCHEMES = ("pvc", "s3")


class ModelNotFoundError(FileNotFoundError):
    """The files a model URI names are not on this replica's file system."""


def local_model_path(uri: str, root: Path | None = None) -> Path:
    """The local path of ``uri`` (see the module's documentation); it must exist."""
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and path.startswith("/"):
        local = Path(path)
    elif parts.scheme in _MOUNTED_SCHEMES and parts.netloc and path.strip("/"):
        mount_root = root if root is not None else model_root()
        local = mount_root / parts.scheme / parts.netloc / path.lstrip("/")
    else:
        raise ValueError(
            f"unsupported model URI {uri!r}: use file:///<path>, pvc://<claim>/<path> or "
            "s3://<bucket>/<path>"
        )
    if not local.exists():
        hint = (
            ""
            if parts.scheme == "file"
            else f" (it should be mounted there, under ${MODEL_ROOT_ENV})"
        )
        raise ModelNotFoundError(f"model {uri} is not at {local}{hint}")
    return local


def model_root() -> Path:
    """Where ``pvc://`` and ``s3://`` models are mounted (``$SOBERANA_MODEL_ROOT``)."""
    configured = os.environ.get(MODEL_ROOT_ENV)
    return Path(configured) if configured else DEFAULT_MODEL_ROOT
