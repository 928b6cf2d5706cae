"""Options that several commands share, declared once."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from soberana.operator.audit.chain import Signer
    from soberana.operator.audit.writer import WriterSettings

_Command = TypeVar("_Command", bound=Callable[..., object])

manifest_paths = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A YAML file or a directory of them (repeatable).",
)

solver = click.option(
    "--solver",
    type=click.Choice(["fast", "optimal"]),
    default="fast",
    show_default=True,
    help="fast: the operator's heuristic. optimal: an exact MILP (slower).",
)


def audit_log(records: str, log_name: str) -> Callable[[_Command], _Command]:
    """``--audit-dir``, ``--audit-signing-key``, ``--audit-log-name`` and
    ``--audit-otlp-endpoint``: a signed, hash-chained log of ``records``, named for ``log_name``."""
    options = [
        click.option(
            "--audit-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Append a signed, hash-chained audit record of {records} to segments in DIR "
            "(see docs/residency-evidence.md). Needs --audit-signing-key.",
        ),
        click.option(
            "--audit-signing-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            metavar="FILE",
            help="Ed25519 private key (PEM) that seals the audit segments "
            "('soberana audit keygen').",
        ),
        click.option(
            "--audit-log-name",
            envvar="POD_NAME",
            default=None,
            help=f"Name of {log_name}'s audit log. Default: the host name.",
        ),
        click.option(
            "--audit-otlp-endpoint",
            default=None,
            metavar="URL",
            help="Also send every audit record as an OTLP log record to URL, such as "
            "http://collector:4318/v1/logs.",
        ),
    ]

    def decorate(command: _Command) -> _Command:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def audit_writer(
    directory: Path | None, key: Path | None, log_name: str | None
) -> tuple[WriterSettings, Signer] | None:
    """The audit log the ``audit_log`` options ask for, checked; None when they ask for none."""
    if directory is None and key is None:
        return None
    if directory is None or key is None:
        raise click.UsageError("--audit-dir and --audit-signing-key go together")
    from soberana.operator.audit.keys import KeyFileError, load_signer
    from soberana.operator.audit.writer import WriterSettings

    try:
        signer = load_signer(key)
        settings = WriterSettings(directory, log_name or socket.gethostname())
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise ValueError(f"--audit-dir {directory} is not writable")
    except OSError as error:
        raise click.BadParameter(f"--audit-dir {directory}: {error.strerror}") from None
    except (KeyFileError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--audit-*") from None
    return settings, signer
