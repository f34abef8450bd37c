"""The pure parts of the dashboard's jobs and activity pages: keyset paging, row ids in URLs, the
filters' links, a job's duration and fields, and where a job ran."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from shipyard.jobs import MAX_JOB_ID as MAX_ID
from shipyard.jobs import JobView
from shipyard.jobs._runner import origin_of
from shipyard.server._dashboard_activity import ActivityFilter, page_of
from shipyard.server._dashboard_jobs import job_row, row_id

T0 = dt.datetime(2026, 12, 6, 18, 0, tzinfo=dt.UTC)


def _keyset(ids: list[int], size: int, older_than: int | None, newer_than: int | None) -> list[int]:
    """What the audit query gives for a page: up to size + 1 ids, newest first (ids newest first)."""
    if newer_than is not None:
        newer = [i for i in ids if i > newer_than]
        return newer[-(size + 1) :]
    older = [i for i in ids if older_than is None or i < older_than]
    return older[: size + 1]


def _walk(ids: list[int], size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Every page following Older links from the first, then every page following Newer links back."""
    forward: list[list[int]] = []
    older: int | None = None
    while True:
        paged = page_of(_keyset(ids, size, older, None), size, lambda i: i, older_than=older)
        forward.append(paged.items)
        if paged.older_than is None:
            break
        older = paged.older_than
    backward: list[list[int]] = []
    newer = paged.newer_than
    while newer is not None:
        paged = page_of(_keyset(ids, size, None, newer), size, lambda i: i, newer_than=newer)
        backward.append(paged.items)
        newer = paged.newer_than
    return forward, backward


@given(st.sets(st.integers(1, 10_000), max_size=60), st.integers(1, 7))
def test_older_links_reach_every_entry_once_and_newer_links_come_back(ids_set: set[int], size: int) -> None:
    ids = sorted(ids_set, reverse=True)
    forward, backward = _walk(ids, size)
    assert [i for page in forward for i in page] == ids
    assert all(len(page) == size for page in forward[:-1])
    # Back from the last page: the same pages, in reverse, ending at the first.
    assert backward == list(reversed(forward[:-1]))


def test_a_first_page_that_holds_everything_has_no_links() -> None:
    paged = page_of([5, 4, 3], 3, lambda i: i)
    assert (paged.items, paged.older_than, paged.newer_than) == ([5, 4, 3], None, None)
    beyond = page_of([5, 4, 3, 2], 3, lambda i: i)
    assert (beyond.items, beyond.older_than, beyond.newer_than) == ([5, 4, 3], 3, None)
    assert page_of([], 3, lambda i: i, older_than=9) == page_of([], 3, lambda i: i)


def test_row_ids_in_urls_are_rows_or_none() -> None:
    assert row_id("1") == 1
    assert row_id(str(MAX_ID)) == MAX_ID
    for text in ["", "0", "-1", "1.5", "abc", "99999999999999999999", str(MAX_ID + 1), "٣", " 1"]:
        assert row_id(text) is None, text


def test_filter_links_keep_the_filters_and_add_the_cursor() -> None:
    wanted = ActivityFilter.of(actor=" token:ops ", action="", target="web&x", since="2h", until="")
    assert wanted.active
    query = parse_qs(urlsplit(wanted.link(older_than=42)).query)
    assert query == {"actor": ["token:ops"], "target": ["web&x"], "since": ["2h"], "older_than": ["42"]}
    assert ActivityFilter().link() == "/ui/activity"
    assert not ActivityFilter().active


def _job(**changes: object) -> JobView:
    fields: dict[str, object] = {
        "id": 7,
        "kind": "restore",
        "request": {"kind": "restore", "what": "database", "set_id": None, "into": "scratch"},
        "result": None,
        "actor": "token:ops",
        "state": "running",
        "exit_code": None,
        "summary": None,
        "started_at": T0,
        "finished_at": None,
    }
    fields.update(changes)
    return JobView(**fields)  # type: ignore[arg-type]


def test_a_job_shows_its_duration_so_far_or_in_all_and_its_typed_fields() -> None:
    running = job_row(_job(), T0 + dt.timedelta(seconds=65))
    assert running.duration == "1m 5s"
    # The typed request's given fields: not its kind, nor the defaults (into: scratch) or nulls.
    assert [(f.name, f.value) for f in running.request] == [("what", "database")]
    ended = job_row(
        _job(
            state="succeeded",
            finished_at=T0 + dt.timedelta(seconds=3),
            result={"set_id": "20261206-180000-ab12", "restored": [{"location": {"port": 5433}}]},
        ),
        T0 + dt.timedelta(hours=5),
    )
    assert ended.duration == "3.00 s"
    assert [(f.name, f.value) for f in ended.result] == [
        ("set_id", "20261206-180000-ab12"),
        ("restored[0].location.port", "5433"),
    ]


def test_a_job_whose_request_is_no_longer_valid_is_shown_as_stored() -> None:
    shown = job_row(_job(kind="gone", request={"kind": "gone", "thing": 1}), T0)
    assert [(f.name, f.value) for f in shown.request] == [("thing", "1")]


def test_a_job_ran_in_the_cli_when_its_owner_is_the_process_that_ran_it() -> None:
    assert origin_of("host-a:4242", 4242) == "cli"
    assert origin_of("host-a:100", 4242) == "server"
    assert origin_of("host-a:100", None) == "server"
