"""The new-studies sensor's cursor: new days and days whose counts changed are due, once."""

from __future__ import annotations

import json
from datetime import date

from screenlake.pacs.cursor import due_days

D1, D2, D3 = date(2024, 3, 11), date(2024, 3, 12), date(2024, 3, 13)


def test_new_days_then_only_days_that_gained_studies() -> None:
    due, cursor = due_days({D1: "studies=2 instances=9", D2: "studies=1 instances=1"}, None)
    assert due == [D1, D2]
    due, cursor = due_days({D1: "studies=2 instances=9", D2: "studies=2 instances=25"}, cursor)
    assert due == [D2]
    due, cursor = due_days({D1: "studies=2 instances=9", D2: "studies=2 instances=25"}, cursor)
    assert due == []
    assert json.loads(cursor) == {
        "2024-03-11": "studies=2 instances=9",
        "2024-03-12": "studies=2 instances=25",
    }


def test_days_that_left_the_look_back_window_stay_seen() -> None:
    _, cursor = due_days({D1: "a", D2: "b"}, None)
    due, cursor = due_days({D2: "b", D3: "c"}, cursor)
    assert due == [D3]
    assert set(json.loads(cursor)) == {"2024-03-11", "2024-03-12", "2024-03-13"}


def test_the_first_sensors_cursor_launches_nothing_twice() -> None:
    due, cursor = due_days({D1: "files=3", D2: "files=4"}, json.dumps(["2024-03-11"]))
    assert due == [D2]
    assert json.loads(cursor) == {"2024-03-11": "files=3", "2024-03-12": "files=4"}


def test_days_before_the_first_partition_are_never_due() -> None:
    assert due_days({D1: "a", D2: "b"}, "not json", first=D2)[0] == [D2]
