"""``soberana audit``: make signing keys, verify audit logs offline, and report what they show."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from soberana.operator.audit.chain import parse_time
from soberana.operator.audit.keys import KeyFileError, generate, load_public_key
from soberana.operator.audit.report import Report, table
from soberana.operator.audit.verify import SegmentSource, Verification, verify

_PATHS = click.Path(exists=True, path_type=Path)


@click.group("audit")
def audit() -> None:
    """Residency evidence: the router's and the operator's signed, hash-chained audit logs."""


@audit.command("keygen")
@click.option(
    "--private-key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the signing key (PEM, mode 0600; must not exist).",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write its public key (PEM), for auditors.",
)
def keygen(private_key: Path, public_key: Path) -> None:
    """Make an Ed25519 key pair for --audit-signing-key."""
    try:
        signer = generate(private_key, public_key)
    except FileExistsError:
        raise click.UsageError(f"{private_key} exists: give a new path") from None
    click.echo(f"key {signer.key_id}: private {private_key}, public {public_key}")


_PUBLIC_KEY = click.option(
    "--public-key",
    "public_keys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Accept only segments sealed with this key (PEM; repeatable, for rotated keys). "
    "Without it, each segment is checked against the key it names itself.",
)
_ALLOW_OPEN = click.option(
    "--allow-open",
    is_flag=True,
    help="Accept each log's newest segment without its checkpoint (a writer still running).",
)


@audit.command("verify")
@click.argument("paths", nargs=-1, required=True, type=_PATHS)
@_PUBLIC_KEY
@_ALLOW_OPEN
def verify_command(
    paths: tuple[Path, ...], public_keys: tuple[Path, ...], allow_open: bool
) -> None:
    """Check the chains and signed checkpoints of the audit segments in PATHS (files or
    directories); name the first broken record of each log. Exits 1 if anything is wrong."""
    result = _verify(paths, public_keys, allow_open, None)
    for log in result.logs.values():
        status = "BROKEN" if log.problem else "ok"
        numbers = f" ({log.first_segment} to {log.last_segment})" if log.segments else ""
        open_tail = f", {log.open_records} records not yet sealed" if log.open_records else ""
        click.echo(
            f"{status}: log {log.log}: {log.segments} segments{numbers}, {log.records} records, "
            f"keys {', '.join(sorted(log.keys))}{open_tail}"
        )
    for problem in result.problems:
        click.echo(f"FIRST BROKEN RECORD: {problem}")
    if not public_keys:
        click.echo(
            "note: signatures were checked against the keys the segments name; give "
            "--public-key to check that they are yours"
        )
    sys.exit(0 if result.ok else 1)


@audit.command("report")
@click.argument("paths", nargs=-1, required=True, type=_PATHS)
@click.option("--since", default=None, help="From this time (RFC 3339 or a date; UTC if no zone).")
@click.option("--until", default=None, help="Until this time, excluded.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_PUBLIC_KEY
@_ALLOW_OPEN
def report_command(
    paths: tuple[Path, ...],
    since: str | None,
    until: str | None,
    output: str,
    public_keys: tuple[Path, ...],
    allow_open: bool,
) -> None:
    """Requests by model x serving jurisdiction x client region, refusals and their reasons,
    where each model was placed, and every request processed outside its residency
    restrictions. Exits 1 when there is any such request, or the logs do not verify."""
    report = Report(since=_time(since, "--since"), until=_time(until, "--until"))
    result = _verify(paths, public_keys, allow_open, report)
    document = report.document()
    document["verified"] = result.ok
    document["problems"] = [str(problem) for problem in result.problems]
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(table(document))
        for problem in result.problems:
            click.echo(f"NOT VERIFIED (records from there on are left out): {problem}")
    sys.exit(0 if result.ok and not report.breaches else 1)


def _time(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a time such as 2026-12-01 or 2026-12-01T08:00:00Z",
            param_hint=option,
        ) from None


def _verify(
    paths: tuple[Path, ...], public_keys: tuple[Path, ...], allow_open: bool, report: Report | None
) -> Verification:
    try:
        keys = [load_public_key(path) for path in public_keys]
    except KeyFileError as error:
        raise click.BadParameter(str(error), param_hint="--public-key") from None
    files = _segment_files(paths)
    if not files:
        raise click.UsageError("no audit segments (*.jsonl) in the paths given")
    return verify(
        [SegmentSource(str(path), _lines(path)) for path in files],
        keys,
        allow_open=allow_open,
        on_record=report.add if report is not None else None,
    )


def _segment_files(paths: tuple[Path, ...]) -> list[Path]:
    """The segment files, ordered by log and segment number (from their headers)."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return sorted(files, key=_order)


def _order(path: Path) -> tuple[str, int, str]:
    with path.open("rb") as file:
        first = file.readline()
    try:
        header = json.loads(first)
        return str(header["log"]), int(header["segment"]), str(path)
    except (ValueError, KeyError, TypeError):
        return "\uffff", 0, str(path)  # not a segment: verify says so, after the others


def _lines(path: Path) -> Callable[[], Iterator[bytes]]:
    def lines() -> Iterator[bytes]:
        with path.open("rb") as file:
            yield from file

    return lines
