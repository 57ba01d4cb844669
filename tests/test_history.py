"""The hub's history on its own (`cello._history`): ids, replay after a position, gaps,
expiry, and positions a client made up. Plain data structure tests, in milliseconds."""

from __future__ import annotations

import json

import pytest

from cello import _history
from cello._events import binary_event, json_event, text_event
from cello._history import History, envelope_text, marker_text


def ids(entries: list[_history.Entry]) -> list[str]:
    return [e.id for e in entries]


def test_ids_grow_across_groups_and_replay_is_per_group() -> None:
    history = History(10, 60)
    start = history.position()
    a1 = history.add("a", text_event("1"), False)
    b1 = history.add("b", text_event("x"), False)
    a2 = history.add("a", text_event("2"), False)
    assert [a1.n, b1.n, a2.n] == [1, 2, 3]
    assert a1.id == f"{history.epoch}-1"
    assert start == f"{history.epoch}-0"
    assert history.resume("a", start) == ([a1, a2], False)
    assert history.resume("a", a1.id) == ([a2], False)
    assert history.resume("a", b1.id) == ([a2], False)  # a position in another group's
    assert history.resume("a", a2.id) == ([], False)
    assert history.resume("a", history.position()) == ([], False)
    assert history.resume("never", start) == ([], False)


def test_a_position_before_what_is_kept_is_a_gap() -> None:
    history = History(3, 60)
    start = history.position()
    entries = [history.add("g", text_event(str(i)), False) for i in range(5)]
    resumed = history.resume("g", start)
    assert resumed.gap
    assert ids(resumed.entries) == ids(entries[2:])
    assert history.resume("g", entries[0].id).gap  # entry 2 was trimmed
    assert history.resume("g", entries[1].id) == (entries[2:], False)


@pytest.mark.parametrize(
    "since",
    ["", "garbage", "1-2-3", "-1", "0-0", "123", "x" * 1000, "\uff11-\uff11"],
)
def test_a_position_this_history_never_gave_is_a_gap_with_all_that_is_kept(since: str) -> None:
    history = History(10, 60)
    kept = history.add("g", text_event("only"), False)
    assert history.resume("g", since) == ([kept], True)


def test_positions_of_another_history_or_ahead_are_gaps() -> None:
    other = History(10, 60)
    history = History(10, 60)
    other.add("g", text_event("x"), False)
    history.add("g", text_event("y"), False)
    if other.epoch != history.epoch:  # two histories in one microsecond share an epoch
        assert history.resume("g", other.position()).gap
    assert history.resume("g", f"{history.epoch}-99").gap
    assert history.resume("g", f"{history.epoch}-٣").gap  # a digit, but not ASCII


def test_an_idle_groups_history_expires_and_a_position_in_it_is_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(_history.time, "monotonic", lambda: now[0])
    history = History(10, 60)
    start = history.position()
    old = history.add("quiet", text_event("old"), False)
    now[0] += 30
    history.add("busy", text_event("b"), False)
    now[0] += 31  # "quiet" idle for 61 s, "busy" for 31 s
    assert history.resume("quiet", start).gap  # expired: what it held is gone
    assert len(history) == 1
    assert not history.resume("busy", start).gap
    new = history.add("quiet", text_event("new"), False)  # a new history for the group
    assert history.resume("quiet", old.id) == ([new], False)  # after what expired: exact
    assert history.resume("quiet", start) == ([new], True)


def test_the_envelope_and_notices_are_json() -> None:
    history = History(10, 60)
    text = history.add("g", text_event('say "hi"\n'), False)
    data = history.add("g", json_event({"n": [1, 2]}), True)
    blob = history.add("g", binary_event(b"\x00\xff"), False)
    group = json.dumps("g")
    assert json.loads(envelope_text(group, text)) == {
        "id": text.id,
        "group": "g",
        "data": 'say "hi"\n',
    }
    assert json.loads(envelope_text(group, data))["data"] == {"n": [1, 2]}
    assert json.loads(envelope_text(group, blob))["binary"] == "AP8="
    assert json.loads(marker_text("joined", group, {"at": "1-2"})) == {
        "hub": "joined",
        "group": "g",
        "at": "1-2",
    }
    assert json.loads(marker_text("gap", group)) == {"hub": "gap", "group": "g"}


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="size"):
        History(0, 60)
    with pytest.raises(ValueError, match="ttl"):
        History(1, 0)


def test_past_the_remembered_expiries_an_old_position_is_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(_history.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(_history, "REMEMBERED_EXPIRIES", 2)
    history = History(10, 60)
    start = history.position()
    for group in ("a", "b", "c"):
        history.add(group, text_event(group), False)
    now[0] += 61
    history.add("d", text_event("d"), False)  # expires a, b, c: a is forgotten
    assert history.resume("a", start).gap
    assert history.resume("b", start).gap  # remembered: b had a broadcast after `start`
    assert history.resume("b", f"{history.epoch}-2") == ([], False)
    assert history.resume("never", start).gap  # maybe a forgotten expiry: a gap
    assert not history.resume("never", f"{history.epoch}-1").gap
