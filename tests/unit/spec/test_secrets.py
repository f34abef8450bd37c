from __future__ import annotations

import pytest

from shipyard.spec._secrets import credential_shape, find_secret_values, is_reference


@pytest.mark.parametrize(
    "value",
    [
        "postgres://app:hunter2@db:5432/app",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "ghp_" + "a" * 36,
        "123456789:" + "A" * 35,
    ],
)
def test_credential_shapes_are_found(value: str) -> None:
    assert credential_shape(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        "postgres://app:${env:PGPASSWORD}@db/app",
        "https://example.com:8443/path",
        "redis://redis:6379/0",
        "plain",
    ],
)
def test_references_and_plain_urls_pass(value: str) -> None:
    assert credential_shape(value) is None


def test_sensitive_names_must_be_references() -> None:
    tree = {
        "services": {
            "api": {
                "env": {
                    "DB_PASSWORD": "hunter2",
                    "API_TOKEN": "${env:API_TOKEN}",
                    "SESSION_SECRET": {"secretRef": "api/session"},
                    "LOG_LEVEL": "info",
                    "DATABASE_URL": "postgres://app:${env:PG}@db/app",
                }
            }
        }
    }
    found = dict(find_secret_values(tree))
    assert list(found) == [("services", "api", "env", "DB_PASSWORD")]
    assert "hunter2" not in found[("services", "api", "env", "DB_PASSWORD")]


def test_is_reference() -> None:
    assert is_reference("${env:X}")
    assert is_reference({"secretRef": "a/b"})
    assert not is_reference("x")
    assert not is_reference({"secretRef": "a/b", "value": "x"})
