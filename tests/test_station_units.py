"""The parts of issue 26 that need no daemon: shift boundaries in a time zone (across midnight and a DST change),
the users file (hashes only, replaced on a second add, bad lines named), who a change is recorded under, and the
station store's bounds."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge.api.users import UserRole, UsersFile, UsersFileError, add_user, hash_token, parse_users
from edge.config import ShiftConfig
from edge.deliver.station import HistoryQuery, StationStore, current_shift
from edge.runtime.principal import Principal, Role, actor, current_principal
from tests.helpers import edge_config

SHIFTS = [ShiftConfig(name="early", start="06:00"), ShiftConfig(name="late", start="14:00"),
          ShiftConfig(name="night", start="22:00")]
BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(("now", "name", "started"), [
    (at(2026, 12, 6, 6, 0), "early", at(2026, 12, 6, 6, 0)),
    (at(2026, 12, 6, 13, 59), "early", at(2026, 12, 6, 6, 0)),
    (at(2026, 12, 6, 23, 30), "night", at(2026, 12, 6, 22, 0)),
    (at(2026, 12, 7, 3, 0), "night", at(2026, 12, 6, 22, 0)),  # after midnight: the night shift that began yesterday
    (at(2026, 3, 29, 7, 0), "early", at(2026, 3, 29, 6, 0)),  # the day clocks go forward
])
def test_current_shift_in_local_time(now, name, started):
    assert current_shift(SHIFTS, "Europe/Berlin", now) == (name, started)


def test_users_file_holds_hashes_and_names_a_bad_line(tmp_path):
    path = tmp_path / "users"
    tok = add_user(path, "alice", UserRole.OPERATOR)
    assert tok not in path.read_text() and hash_token(tok) in path.read_text()
    users = UsersFile(path)
    found = users.find(tok)
    assert found is not None and found.name == "alice" and found.roles == {Role.VIEW, Role.OPERATE}
    assert users.find(tok + "x") is None
    tok2 = add_user(path, "alice", UserRole.ENGINEER)  # a second add replaces: new token, new role
    assert len(parse_users(path.read_text(), path)) == 1 and parse_users(path.read_text(), path)[hash_token(tok2)].role == UserRole.ENGINEER
    (tmp_path / "bad").write_text("# users\nbob:admin:" + hash_token("x") + "\n")
    with pytest.raises(UsersFileError, match="line 2: role 'admin'"):
        UsersFile(tmp_path / "bad")
    with pytest.raises(UsersFileError, match="a user name"):
        add_user(path, "a:b", UserRole.VIEWER)


def test_who_a_change_is_recorded_under():
    assert actor() == "anonymous" and actor("badge 7") == "badge 7"
    for name, claimed, want in (("erin", "mallory", "erin"), ("token", "badge 7", "badge 7"), ("token", None, "token")):
        reset = current_principal.set(Principal(name, frozenset(Role)))
        try:
            assert actor(claimed) == want
        finally:
            current_principal.reset(reset)


def test_station_store_keeps_within_the_evidence_retention(tmp_path):
    clock = [at(2026, 12, 6, 7, 0)]
    cfg = edge_config(tmp_path, evidence={"max_files": 3, "max_age_days": 1.0},
                      station={"db_path": str(tmp_path / "s.sqlite3"), "timezone": "Europe/Berlin",
                               "shifts": [s.model_dump() for s in SHIFTS]})
    store = StationStore(cfg, clock=lambda: clock[0])
    for i in range(60):  # a retention pass every 50 decisions
        store.on_decision({"event_id": f"e{i}", "decided_at": datetime.fromtimestamp(clock[0], BERLIN).isoformat(),
                           "is_defect": i % 4 == 0, "label": "x", "part_id": f"p{i}"})
    assert store.count(HistoryQuery()) == 3 + 10  # trimmed to max_files at the 50th, 10 since
    c = store.counters()
    assert (c["shift"]["name"], c["shift"]["boxes"], c["shift"]["ng"], c["shift"]["n"]) == ("early", 60, 15, 60)
    clock[0] = at(2026, 12, 6, 14, 0, 1)  # the late shift: a new period at zero, never a rate without n
    c = store.counters()
    assert (c["shift"]["name"], c["shift"]["boxes"], c["shift"]["yield"], c["shift"]["n"]) == ("late", 0, None, 0)
    assert c["lot"]["boxes"] == 60  # a lot runs until it is reset
    assert [p["name"] for p in store.periods("shift")] == ["late", "early"]
    store.close()
