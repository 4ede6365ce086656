"""The breach state machine (kfops.monitor.trigger) with an injected clock: consecutive
breaches, cooldown, clean runs that close, and one dispatch per breach whatever the run
count."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfops.monitor import trigger
from kfops.monitor.trigger import BREACH, ERROR, INSUFFICIENT, OK, State
from kfops.project.model import OnBreach

START = datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def _policy(**kw: object) -> OnBreach:
    base = {"consecutive": 3, "cooldown": "24h", "cooldown_seconds": 86400.0, "retrain": "auto"}
    base.update(kw)
    return OnBreach(**base)  # type: ignore[arg-type]


def _runs(verdicts: list[str], policy: OnBreach, every: timedelta = HOUR) -> list[trigger.Decision]:
    """Run the machine as the monitor does, marking dispatches and issues as carried out."""
    state = State()
    decisions = []
    for index, verdict in enumerate(verdicts):
        now = START + index * every
        decision = trigger.step(state, verdict, now, policy, project="iris", environment="prod")
        state = decision.state
        for action in decision.actions:
            if action.kind in (trigger.OPEN_ISSUE, trigger.UPDATE_ISSUE):
                state = State(**{**state.__dict__, "issue": 7, "issue_open": True})
            if action.kind == trigger.CLOSE_ISSUE:
                state = State(**{**state.__dict__, "issue_open": False})
            if action.kind == trigger.DISPATCH:
                assert action.key is not None
                state = trigger.dispatched(state, action.key, now)
        decisions.append(trigger.Decision(state, decision.actions, decision.notes))
    return decisions


def _kinds(decisions: list[trigger.Decision]) -> list[list[str]]:
    return [[a.kind for a in d.actions] for d in decisions]


def test_three_breaching_runs_make_one_issue_and_one_dispatch() -> None:
    decisions = _runs([BREACH, BREACH, BREACH], _policy())
    assert _kinds(decisions) == [[], [], ["open_issue", "dispatch"]]
    assert "breaching run 1 of 3: 2 more in a row make a breach" in decisions[0].notes
    key = decisions[2].actions[1].key
    assert key == trigger.episode_key("iris", "prod", START + 2 * HOUR)
    assert decisions[2].state.episode == key


def test_a_breach_at_once_then_updates_never_a_second_dispatch() -> None:
    decisions = _runs([BREACH] * 5, _policy(consecutive=1))
    assert _kinds(decisions) == [["open_issue", "dispatch"]] + [["update_issue"]] * 4
    assert "already dispatched" in decisions[1].notes[-1]


def test_an_ok_run_breaks_the_series() -> None:
    decisions = _runs([BREACH, BREACH, OK, BREACH, BREACH], _policy())
    assert all(kinds == [] for kinds in _kinds(decisions))
    assert decisions[-1].state.breaches == 2


def test_clean_runs_close_after_close_after() -> None:
    decisions = _runs([BREACH, OK, OK], _policy(consecutive=1, close_after=2))
    assert _kinds(decisions) == [["open_issue", "dispatch"], ["update_issue"], ["close"]]
    assert "1 more clean run close the breach" in decisions[1].notes[0]
    assert decisions[2].state.episode is None
    assert not decisions[2].state.issue_open


def test_insufficient_data_is_never_clean_and_keeps_the_series() -> None:
    decisions = _runs(
        [BREACH, BREACH, INSUFFICIENT, BREACH, OK, INSUFFICIENT, OK, OK],
        _policy(close_after=2),
    )
    kinds = _kinds(decisions)
    assert kinds[3] == ["open_issue", "dispatch"]  # the insufficient run did not reset it
    assert kinds[5] == ["update_issue"]
    assert kinds[6] == ["update_issue"]  # one clean after the insufficient one: not yet
    assert kinds[7] == ["close"]


def test_an_error_changes_nothing() -> None:
    first = _runs([BREACH, BREACH], _policy())[-1].state
    decision = trigger.step(
        first, ERROR, START + 3 * HOUR, _policy(), project="iris", environment="prod"
    )
    assert decision.actions == ()
    assert decision.state.breaches == first.breaches
    assert decision.state.history[-1][1] == ERROR


def test_a_new_breach_within_the_cooldown_opens_the_issue_but_waits_to_dispatch() -> None:
    policy = _policy(consecutive=1, close_after=1, cooldown="12h", cooldown_seconds=12 * 3600.0)
    verdicts = [BREACH, OK, BREACH] + [BREACH] * 12
    decisions = _runs(verdicts, policy)
    kinds = _kinds(decisions)
    assert kinds[0] == ["open_issue", "dispatch"]
    assert kinds[1] == ["close"]
    assert kinds[2] == ["open_issue"]  # carry_out reopens the closed sticky issue
    assert "in cooldown until 2026-12-01T12:00:00Z" in decisions[2].notes[-1]
    first_after = next(i for i, k in enumerate(kinds) if i > 2 and "dispatch" in k)
    assert first_after == 12  # twelve hours after the first dispatch
    assert decisions[2].state.episode != decisions[0].state.episode


@pytest.mark.parametrize(("retrain", "expected"), [("issue", ["open_issue"]), ("off", [])])
def test_retrain_issue_and_off(retrain: str, expected: list[str]) -> None:
    decisions = _runs([BREACH], _policy(consecutive=1, retrain=retrain))
    assert _kinds(decisions) == [expected]


def test_the_state_round_trips_and_unreadable_state_starts_afresh() -> None:
    state = _runs([BREACH, BREACH, BREACH], _policy())[-1].state
    assert State.from_json(state.to_json()) == state
    assert State.from_json({"breaches": "many"}) == State()
    assert State.from_json(None) == State()


@settings(max_examples=200, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([OK, BREACH, INSUFFICIENT, ERROR]), max_size=60),
    consecutive=st.integers(1, 4),
    close_after=st.integers(1, 3),
    cooldown_hours=st.integers(0, 30),
)
def test_properties(
    verdicts: list[str], consecutive: int, close_after: int, cooldown_hours: int
) -> None:
    policy = _policy(
        consecutive=consecutive,
        close_after=close_after,
        cooldown=f"{cooldown_hours}h",
        cooldown_seconds=cooldown_hours * 3600.0,
    )
    decisions = _runs(verdicts, policy)
    dispatches = [
        (index, a.key)
        for index, d in enumerate(decisions)
        for a in d.actions
        if a.kind == trigger.DISPATCH
    ]
    keys = [key for _, key in dispatches]
    assert len(keys) == len(set(keys)), "one dispatch per breach"
    for (first, _), (second, _) in itertools.pairwise(dispatches):
        assert (second - first) * HOUR >= timedelta(hours=cooldown_hours), "cooldown kept"
    for index, decision in enumerate(decisions):
        kinds = [a.kind for a in decision.actions]
        if trigger.OPEN_ISSUE in kinds or trigger.DISPATCH in kinds:
            assert verdicts[index] == BREACH
        if trigger.CLOSE_ISSUE in kinds:
            assert verdicts[index] == OK
        if verdicts[index] == BREACH and decision.state.episode is None:
            assert decision.state.breaches < consecutive
