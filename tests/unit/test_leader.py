"""Leader election's decisions, with time passed in: who may take the Lease, and when a leader
must stop writing."""

from __future__ import annotations

import datetime as dt

import pytest

from soberana.operator.controller.config import LeaderElection
from soberana.operator.controller.leader import Action, Candidate, LeaseRecord

WALL = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
TIMING = {"lease_duration_s": 15.0, "renew_deadline_s": 10.0, "retry_period_s": 2.0}


def candidate(identity: str) -> Candidate:
    return Candidate(LeaderElection(identity=identity, **TIMING))


def held_by(holder: str, renewed: float = 0.0, version: str = "1") -> LeaseRecord:
    when = WALL + dt.timedelta(seconds=renewed)
    return LeaseRecord(holder, 15, WALL, when, 3, version)


def test_no_lease_is_created_then_renewed() -> None:
    a = candidate("a")
    a.observe(None, now=0.0)
    assert a.decide(0.0) is Action.CREATE
    wanted = a.desired(WALL)
    assert (wanted.holder, wanted.lease_duration_s, wanted.transitions) == ("a", 15, 0)
    assert not a.is_leader(0.0)
    a.wrote(wanted, started=0.0)
    assert a.is_leader(0.0)
    a.observe(wanted, now=2.0)
    assert a.decide(2.0) is Action.RENEW
    renewal = a.desired(WALL + dt.timedelta(seconds=2))
    # a renewal keeps the acquire time and the transitions, and moves the renew time
    assert renewal.acquire_time == WALL and renewal.transitions == 0
    assert renewal.renew_time == WALL + dt.timedelta(seconds=2)


def test_a_valid_lease_of_another_holder_is_waited_for() -> None:
    b = candidate("b")
    b.observe(held_by("a"), now=100.0)
    for now in (100.0, 105.0, 114.9):
        assert b.decide(now) is Action.WAIT
    assert not b.is_leader(114.9)


def test_expiry_is_counted_from_when_the_record_last_changed_on_our_clock() -> None:
    """The holder's renew time says 1970 here: clocks of other machines are never trusted."""
    b = candidate("b")
    stale_clock = LeaseRecord("a", 15, None, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), 0, "7")
    b.observe(stale_clock, now=50.0)
    assert b.decide(60.0) is Action.WAIT
    # the holder renews: a changed record restarts the count
    renewed = LeaseRecord("a", 15, None, dt.datetime(1970, 1, 1, 0, 0, 2, tzinfo=dt.UTC), 0, "8")
    b.observe(renewed, now=62.0)
    assert b.decide(76.9) is Action.WAIT
    # the same record read again does not
    b.observe(renewed, now=70.0)
    assert b.decide(77.0) is Action.ACQUIRE


def test_taking_over_counts_a_transition_and_keeps_the_version_it_read() -> None:
    b = candidate("b")
    b.observe(held_by("a", version="42"), now=0.0)
    assert b.decide(15.0) is Action.ACQUIRE
    wanted = b.desired(WALL + dt.timedelta(seconds=15))
    assert (wanted.holder, wanted.transitions, wanted.resource_version) == ("b", 4, "42")
    assert wanted.acquire_time == WALL + dt.timedelta(seconds=15)


def test_a_released_lease_is_taken_at_once() -> None:
    b = candidate("b")
    b.observe(LeaseRecord("", 1, WALL, WALL, 3, "9"), now=0.0)
    assert b.decide(0.0) is Action.ACQUIRE


def test_the_leader_stops_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    a, b = candidate("a"), candidate("b")
    a.observe(None, now=0.0)
    record = a.desired(WALL)
    a.wrote(record, started=0.0)
    # b reads the record a moment after it was written
    b.observe(record, now=0.5)
    assert a.is_leader(9.9)
    assert not a.is_leader(10.0)  # no renewal since the one that started at 0: stop writing
    assert b.decide(10.0) is Action.WAIT  # and nobody else writes yet
    assert b.decide(15.5) is Action.ACQUIRE  # the margin between the two is the safety
    # a renewal that succeeds extends the leader's time from when it *started*
    a.wrote(a.desired(WALL + dt.timedelta(seconds=8)), started=8.0)
    assert a.is_leader(17.9) and not a.is_leader(18.0)


def test_seeing_another_holder_or_losing_ends_leadership() -> None:
    a = candidate("a")
    a.observe(None, now=0.0)
    a.wrote(a.desired(WALL), started=0.0)
    a.observe(held_by("b"), now=1.0)
    assert not a.is_leader(1.0)
    assert a.decide(1.0) is Action.WAIT
    c = candidate("c")
    c.observe(None, now=0.0)
    c.wrote(c.desired(WALL), started=0.0)
    c.lost()
    assert not c.is_leader(0.1)


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"lease_duration_s": 10, "renew_deadline_s": 10}, "must be longer than the renew"),
        ({"renew_deadline_s": 2, "retry_period_s": 2}, "1.2 x the retry period"),
        ({"retry_period_s": 0}, "retry period must be > 0"),
    ],
)
def test_inconsistent_timing_is_refused_with_a_clear_message(
    timing: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        LeaderElection(identity="x", **timing)
