"""When a verdict starts the next model cycle: consecutive breaches, cooldown and clean runs.

A pure state machine. ``step`` takes the state left by the last run, this run's verdict
and the time, and returns the new state with the actions to take:

- ``consecutive`` breaching runs in a row make a breach: a new *episode*, with an
  idempotency key, so however many runs breach, one episode opens one issue and
  dispatches one retraining;
- a dispatch waits until ``cooldown`` has passed since the last one;
- ``close_after`` clean runs in a row end the episode and close the issue;
- ``insufficient_data`` is never clean: it neither counts towards closing nor breaks a
  series of breaches. An ``error`` changes nothing.

The clock is a parameter, so windows, hysteresis and cooldown are tested exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from kfops.project.model import OnBreach

OK, BREACH, INSUFFICIENT, ERROR = "ok", "breach", "insufficient_data", "error"
HISTORY = 24  # verdicts kept in the state, newest last

# The actions a run can ask for, in the order they are carried out.
OPEN_ISSUE, UPDATE_ISSUE, CLOSE_ISSUE, DISPATCH = "open_issue", "update_issue", "close", "dispatch"


@dataclass(frozen=True)
class State:
    """What the monitor remembers between runs (kept in a JSON file, and in the issue)."""

    breaches: int = 0  # breaching runs in a row
    clean: int = 0  # ok runs in a row
    episode: str | None = None  # the key of the breach in progress, None when there is none
    episode_started: str | None = None  # ISO time
    issue: int | None = None  # the issue's number, once there is one
    issue_open: bool = False
    dispatched: tuple[str, ...] = ()  # episode keys already dispatched (newest last)
    last_dispatch: str | None = None  # ISO time of the last dispatch
    history: tuple[tuple[str, str], ...] = ()  # (ISO time, verdict), newest last

    def to_json(self) -> dict[str, Any]:
        return {
            "breaches": self.breaches,
            "clean": self.clean,
            "episode": self.episode,
            "episode_started": self.episode_started,
            "issue": self.issue,
            "issue_open": self.issue_open,
            "dispatched": list(self.dispatched),
            "last_dispatch": self.last_dispatch,
            "history": [{"at": at, "verdict": verdict} for at, verdict in self.history],
        }

    @classmethod
    def from_json(cls, data: Any) -> State:
        """A state read back; anything unreadable starts afresh rather than failing."""
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(
                breaches=int(data.get("breaches", 0)),
                clean=int(data.get("clean", 0)),
                episode=_text(data.get("episode")),
                episode_started=_text(data.get("episode_started")),
                issue=int(data["issue"]) if data.get("issue") is not None else None,
                issue_open=bool(data.get("issue_open", False)),
                dispatched=tuple(str(k) for k in data.get("dispatched") or ()),
                last_dispatch=_text(data.get("last_dispatch")),
                history=tuple(
                    (str(item["at"]), str(item["verdict"])) for item in data.get("history") or ()
                ),
            )
        except (KeyError, TypeError, ValueError):
            return cls()

    @property
    def last_verdict(self) -> tuple[str, str] | None:
        return self.history[-1] if self.history else None


@dataclass(frozen=True)
class Action:
    kind: str  # OPEN_ISSUE, UPDATE_ISSUE, CLOSE_ISSUE or DISPATCH
    key: str | None = None  # the episode's idempotency key (DISPATCH)


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...]
    notes: tuple[str, ...] = field(default=())  # what was decided and why, one line each


def episode_key(project: str, environment: str, started: datetime) -> str:
    """The idempotency key of a breach: the project, the environment and when it began."""
    text = f"{project}\0{environment}\0{_iso(started)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def step(
    state: State,
    verdict: str,
    now: datetime,
    policy: OnBreach,
    *,
    project: str,
    environment: str,
) -> Decision:
    """The new state after a run whose verdict is ``verdict`` at ``now``."""
    history = (*state.history, (_iso(now), verdict))[-HISTORY:]
    state = replace(state, history=history)
    if verdict == ERROR:
        return Decision(state, (), ("the run failed: nothing changes",))
    if verdict == INSUFFICIENT:
        state = replace(state, clean=0)
        actions = (Action(UPDATE_ISSUE),) if state.issue_open else ()
        return Decision(state, actions, ("insufficient data is never clean",))
    if verdict == OK:
        return _clean(state, policy)
    return _breach(state, now, policy, project, environment)


def _clean(state: State, policy: OnBreach) -> Decision:
    state = replace(state, breaches=0, clean=state.clean + 1)
    if state.episode is None:
        return Decision(state, ())
    if state.clean < policy.close_after:
        left = policy.close_after - state.clean
        return Decision(
            state,
            (Action(UPDATE_ISSUE),) if state.issue_open else (),
            (f"clean; {left} more clean run{'s' * (left != 1)} close the breach",),
        )
    actions = (Action(CLOSE_ISSUE),) if state.issue_open else ()
    note = f"{state.clean} clean runs in a row: the breach is over"
    return Decision(replace(state, episode=None, episode_started=None), actions, (note,))


def _breach(
    state: State, now: datetime, policy: OnBreach, project: str, environment: str
) -> Decision:
    state = replace(state, breaches=state.breaches + 1, clean=0)
    if state.episode is None and state.breaches < policy.consecutive:
        left = policy.consecutive - state.breaches
        note = (
            f"breaching run {state.breaches} of {policy.consecutive}: {left} more in a row"
            f" make{'s' * (left == 1)} a breach"
        )
        return Decision(state, (), (note,))
    notes: list[str] = []
    actions: list[Action] = []
    if state.episode is None:
        key = episode_key(project, environment, now)
        state = replace(state, episode=key, episode_started=_iso(now))
        notes.append(f"{state.breaches} breaching run(s) in a row: breach {key}")
    assert state.episode is not None
    if policy.retrain == "off":
        return Decision(state, (), (*notes, "on_breach.retrain is off: report only"))
    actions.append(Action(UPDATE_ISSUE if state.issue_open else OPEN_ISSUE))
    if policy.retrain != "auto":
        return Decision(state, tuple(actions), tuple(notes))
    if state.episode in state.dispatched:
        notes.append(f"retraining for breach {state.episode} was already dispatched")
        return Decision(state, tuple(actions), tuple(notes))
    if state.last_dispatch is not None:
        until = _time(state.last_dispatch) + timedelta(seconds=policy.cooldown_seconds)
        if now < until:
            notes.append(
                f"in cooldown until {_iso(until)} (on_breach.cooldown {policy.cooldown}):"
                " no retraining yet"
            )
            return Decision(state, tuple(actions), tuple(notes))
    actions.append(Action(DISPATCH, state.episode))
    return Decision(state, tuple(actions), tuple(notes))


def dispatched(state: State, key: str, now: datetime) -> State:
    """The state once the dispatch of ``key`` succeeded."""
    return replace(state, dispatched=(*state.dispatched, key)[-HISTORY:], last_dispatch=_iso(now))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None
