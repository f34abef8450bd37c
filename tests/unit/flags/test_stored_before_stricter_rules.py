"""A flag written before a rule was added (a json payload that does not parse, a number payload
that is not a number, a numeric `createdAt`) still loads from the store: a stricter model must not
stop flag evaluation. Its next write is held to the rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from shipyard.flags import FlagStore
from shipyard.spec.flags import Flag
from shipyard.state import FlagRow, open_engine, session_factory

OLD = {
    "key": "checkout",
    "default_value": False,
    "created_at": 1700000000,
    "environments": {
        "production": {
            "enabled": True,
            "rules": [
                {
                    "split": {
                        "variants": [
                            {
                                "name": "a",
                                "value": True,
                                "weight": 1,
                                "payload": {"type": "json", "value": "{x"},
                            },
                            {
                                "name": "b",
                                "value": True,
                                "weight": 1,
                                "payload": {"type": "number", "value": "many"},
                            },
                        ]
                    }
                }
            ],
        }
    },
}


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def test_the_rules_refuse_the_old_document_on_its_way_in() -> None:
    with pytest.raises(ValidationError) as refused:
        Flag.model_validate(OLD)
    assert sorted(str(e["loc"][-1]) for e in refused.value.errors()) == ["created_at", "value", "value"]


def test_a_stored_flag_from_before_the_rules_still_loads(sessions: sessionmaker[Session]) -> None:
    store = FlagStore(sessions)
    store.version()  # migrated
    with sessions() as session, session.begin():
        session.add(FlagRow(key="checkout", version=1, document=OLD))
    flags = store.snapshot().flags
    assert [f.key for f in flags] == ["checkout"]
    loaded: Any = flags[0].environments["production"].rules[0].split
    assert [v.payload.value for v in loaded.variants] == ["{x", "many"]
    # another flag can still be written beside it
    store.create({"key": "banner", "default_value": True}, "test")
    assert sorted(f.key for f in store.snapshot().flags) == ["banner", "checkout"]
