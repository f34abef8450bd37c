"""What the pg_receivewal spool may lose (issue 12, defect 7): only what pgBackRest's archive holds,
or what is older than the oldest backup's WAL. The rule is pure; the listing it trusts is
pgBackRest's own (`repo-ls`), parsed here."""

from __future__ import annotations

import pytest

from shipyard.backup._pgbackrest import parse_archive_listing, parse_info
from shipyard.backup._walstream import prunable
from shipyard.errors import BackupError

SEGMENTS = [f"0000000100000000000000{n:02X}" for n in range(1, 8)]


def test_only_archived_complete_segments_go() -> None:
    names = [*SEGMENTS, SEGMENTS[-1].replace("07", "08") + ".partial", "pg_receivewal.pid", "junk"]
    archived = set(SEGMENTS[:4]) | {"000000010000000000000008"}  # the open one is archived: stays
    assert prunable(names, archived, needed_from=None) == SEGMENTS[:4]


def test_a_gap_in_the_archive_keeps_its_segment() -> None:
    archived = {SEGMENTS[0], SEGMENTS[2]}
    assert prunable(SEGMENTS, archived, needed_from=None) == [SEGMENTS[0], SEGMENTS[2]]


def test_segments_before_the_oldest_backup_go_archived_or_not() -> None:
    # No restore starts before the oldest backup's first WAL segment; expiry drops them too.
    assert prunable(SEGMENTS, set(), needed_from=SEGMENTS[3]) == SEGMENTS[:3]
    # Whatever the timeline: a promoted primary's segments sort by position.
    later = ["000000020000000000000002", "000000020000000000000009"]
    assert prunable(later, set(), needed_from=SEGMENTS[3]) == ["000000020000000000000002"]
    assert prunable(SEGMENTS, set(), needed_from="") == []


def test_the_archive_listing_names_its_segments() -> None:
    listing = {
        ".": {"type": "path"},
        "0000000100000000": {"type": "path"},
        "0000000100000000/000000010000000000000001-31e7a680a6fcb85320d4c953ce914c18f1c782c0.lz4": {
            "type": "file",
            "size": 2060092,
        },
        "0000000100000000/000000010000000000000002-fb9eac61bdfb76e0e9dd8a9293d1a7b52941986a": {
            "type": "file",
            "size": 16777216,
        },
        # written but empty (a failed upload): not held
        "0000000100000000/000000010000000000000003-8b125b97466d55e60f8dda6e23160718d2be9555.gz": {
            "type": "file",
            "size": 0,
        },
        "0000000100000000/00000002.history": {"type": "file", "size": 40},
    }
    assert parse_archive_listing(listing) == {"000000010000000000000001", "000000010000000000000002"}
    with pytest.raises(BackupError, match="not a listing"):
        parse_archive_listing([])


def test_info_names_the_archive_being_written() -> None:
    document = [
        {
            "name": "main",
            "status": {"code": 0, "message": "ok"},
            "archive": [
                {"database": {"id": 1}, "id": "14-1", "min": "000000010000000000000001"},
                {"database": {"id": 2}, "id": "15-2", "min": "000000010000000000000003"},
            ],
            "backup": [],
        }
    ]
    assert parse_info(document, "main").archive_id == "15-2"
    assert parse_info([{"name": "main", "status": {"code": 2}}], "main").archive_id is None
