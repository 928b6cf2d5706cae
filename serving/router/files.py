"""Follow a YAML file (the static routes, the API keys) and hand on each valid version of it.

Mounted ConfigMaps and Secrets change in place, so the file is polled: when its identity, size
or modification time changes it is parsed again. A version that does not parse is logged and
ignored; the last good one stays in force, so a bad edit never empties the router's table.
A file that holds secrets is followed with ``secret=True``: YAML syntax errors are then reported
by position only, because PyYAML quotes the offending line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

log = logging.getLogger(__name__)

T = TypeVar("T")


class FileFollower(Generic[T]):
    def __init__(
        self,
        path: Path,
        parse: Callable[[Any], T],
        publish: Callable[[T], None],
        interval_s: float = 2.0,
        *,
        secret: bool = False,
    ) -> None:
        self.path = path
        self._secret = secret
        self._parse = parse
        self._publish = publish
        self._interval_s = interval_s
        self._seen: tuple[int, int, int] | None = None

    def load(self) -> T:
        """Read, parse and publish the file now; raises when it is missing or invalid."""
        seen = self._identity()
        try:
            document = yaml.safe_load(self.path.read_text())
        except yaml.MarkedYAMLError as error:
            if not self._secret:
                raise
            mark = error.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"{self.path} is not valid YAML{where}") from None
        value = self._parse(document)
        self._seen = seen
        self._publish(value)
        return value

    async def follow(self) -> None:
        """Reload the file whenever it changes, until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed since last seen; True when a new version took."""
        try:
            if self._identity() == self._seen:
                return False
            self.load()
        except (OSError, ValueError, yaml.YAMLError) as error:
            # pydantic's ValidationError is a ValueError
            log.warning("kept the previous %s: %s", self.path, error)
            self._seen = self._identity_or_none()
            return False
        log.info("reloaded %s", self.path)
        return True

    def _identity(self) -> tuple[int, int, int]:
        status = os.stat(self.path)
        return status.st_ino, status.st_size, status.st_mtime_ns

    def _identity_or_none(self) -> tuple[int, int, int] | None:
        try:
            return self._identity()
        except OSError:
            return None
