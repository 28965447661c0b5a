"""The work driver: length batches, one log line per finished item, resuming, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.errors import InputError
from interp.runs import LOG_FILE, WorkLog, run_identity
from interp.work import Item, Work, batches, open_log
from tests.interp.test_results import provenance

IDENTITY = run_identity(provenance())


class Stop(Exception):
    """Stands for a kill between two items."""


def _squares(calls: list[list[int]]):
    """A batch function that records each batch it gets: one row per item, its square."""

    def process(values: list[int]) -> list[list[dict]]:
        calls.append(list(values))
        return [[{"item": v, "square": v * v}] for v in values]

    return process


def _items(values: list[int]) -> list[Item[int]]:
    return [Item(f"n/{v}", v, length=v) for v in values]


def test_batches_sort_by_length_and_split_dissimilar_lengths() -> None:
    lengths = [300, 200, 205, 310, 201, 302, 100]
    assert batches(lengths, 2, similar=1.1) == [[6], [1, 4], [2], [0, 5], [3]]
    assert batches(lengths, 8, similar=1.1) == [[6], [1, 4, 2], [0, 5, 3]]
    assert batches(lengths, 3) == [[6, 1, 4], [2, 0, 5], [3]]  # any lengths share a batch
    assert batches([0, 0, 0], 2) == [[0, 1], [2]]  # equal lengths keep their order
    with pytest.raises(InputError, match="at least 1"):
        batches(lengths, 0)


def test_batches_in_order_hold_whole_groups_of_an_order_value_where_they_fit() -> None:
    # Similar lengths (50 and 52, within 1.1) are batched by order, not length: groups 0
    # and 1 (3 items each) do not fit in one batch of 4; group 2 (5 items) fills one and
    # shares the next with group 3. Length 90 is not similar: a run of its own.
    lengths = [50] * 10 + [52, 50, 90]
    order = [1, 0, 0, 1, 0, 1, 2, 2, 2, 2, 2, 3, 0]
    expected = [[1, 2, 4], [0, 3, 5], [6, 7, 8, 9], [10, 11], [12]]
    assert batches(lengths, 4, 1.1, order) == expected


def test_work_runs_each_batch_once_and_resumes(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    first = Work(_items([3, 1, 2]), WorkLog(tmp_path, IDENTITY), 2).run(_squares(calls))
    assert calls == [[1, 2], [3]]  # shortest first, two per batch
    assert [rows[0]["square"] for rows in first] == [9, 1, 4]  # item order
    again = Work(_items([3, 4, 1]), WorkLog(tmp_path, IDENTITY)).run(_squares(calls))
    assert calls[2:] == [[4]]  # only the new item ran
    assert [rows[0]["item"] for rows in again] == [3, 4, 1]
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["n/1", "n/2", "n/3", "n/4"]


def test_a_stopped_run_resumes_the_batches_it_lacks_to_the_same_rows(tmp_path) -> None:
    once = Work(_items([5, 4, 3, 2, 1]), batch_size=2).run(_squares([]))

    def stop_after_first_batch(done: int, total: int) -> None:
        if done:
            raise Stop

    with pytest.raises(Stop):
        log = WorkLog(tmp_path, IDENTITY)
        Work(_items([5, 4, 3, 2, 1]), log, 2).run(_squares([]), stop_after_first_batch)
    assert len((tmp_path / LOG_FILE).read_text().splitlines()) == 2
    calls: list[list[int]] = []
    resumed = Work(_items([5, 4, 3, 2, 1]), WorkLog(tmp_path, IDENTITY), 2)
    assert resumed.todo == [5, 4, 3]
    assert resumed.run(_squares(calls)) == once
    assert calls == [[3, 4], [5]]  # items 1 and 2 were logged


def test_a_batch_the_log_holds_in_part_runs_whole_and_records_what_it_lacks(tmp_path) -> None:
    Work(_items([1, 2, 3]), WorkLog(tmp_path, IDENTITY), 2).run(_squares([]))
    lines = (tmp_path / LOG_FILE).read_text().splitlines(keepends=True)
    (tmp_path / LOG_FILE).write_text(lines[0] + lines[2])  # item 2 of batch [1, 2] lost
    calls: list[list[int]] = []
    rows = Work(_items([1, 2, 3]), WorkLog(tmp_path, IDENTITY), 2).run(_squares(calls))
    assert calls == [[1, 2]]  # the batch an uninterrupted run had, not [2] alone
    assert [r[0]["item"] for r in rows] == [1, 2, 3]
    keys = [json.loads(line)["key"] for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert keys == ["n/1", "n/3", "n/2"]  # item 1 is not recorded twice


def test_progress_counts_logged_items_before_any_work(tmp_path) -> None:
    log = WorkLog(tmp_path, IDENTITY)
    Work(_items([1, 2]), log).run(_squares([]))
    seen: list[tuple[int, int]] = []
    Work(_items([1, 2, 3, 4, 5]), log).run(_squares([]), lambda *a: seen.append(a))
    assert seen == [(2, 5), (3, 5), (4, 5), (5, 5)]
    seen.clear()
    Work(_items([7, 8, 9]), batch_size=2).run(_squares([]), lambda *a: seen.append(a))
    assert seen == [(0, 3), (2, 3), (3, 3)]  # after each batch


def test_rows_come_back_as_the_log_gives_them_logged_or_not(tmp_path) -> None:
    def process(values: list[int]) -> list[list[dict]]:
        return [[{"pair": (v, v), "half": v / 2, "nan": float("nan")}] for v in values]

    bare = Work(_items([1])).run(process)
    logged = Work(_items([1]), WorkLog(tmp_path, IDENTITY)).run(process)
    reread = Work(_items([1]), WorkLog(tmp_path, IDENTITY)).run(_squares([]))
    for rows in (bare, logged, reread):
        row = rows[0][0]
        assert row["pair"] == [1, 1] and row["half"] == 0.5 and row["nan"] != row["nan"]


def test_rows_json_cannot_hold_are_refused_before_the_log(tmp_path) -> None:
    log = WorkLog(tmp_path, IDENTITY)
    with pytest.raises(TypeError, match="not JSON serializable"):
        Work(_items([1]), log).run(lambda values: [[{"x": object()}] for _ in values])
    assert not (tmp_path / LOG_FILE).exists() and not log.is_done("n/1")


def test_repeated_keys_bad_batch_sizes_and_miscounted_rows_are_refused() -> None:
    with pytest.raises(InputError, match=r"repeated: \['n/1'\]"):
        Work(_items([1, 1]))
    with pytest.raises(InputError, match="at least 1"):
        Work(_items([1]), batch_size=0)
    with pytest.raises(ValueError, match="rows for 1 of 2 items"):
        Work(_items([1, 2]), batch_size=2).run(lambda values: [[]])


def test_open_log_refuses_a_folder_of_another_run(tmp_path) -> None:
    assert open_log(None, IDENTITY) is None
    shared = WorkLog(tmp_path / "shared", IDENTITY)
    assert open_log(shared, {"model": "ignored: the caller's log"}) is shared
    Work(_items([1]), open_log(tmp_path / "run", provenance())).run(_squares([]))
    assert open_log(tmp_path / "run", IDENTITY).is_done("n/1")  # a Provenance or its identity
    with pytest.raises(InputError, match="another config; resuming would mix"):
        open_log(tmp_path / "run", {**IDENTITY, "config": {"other": 1}})
