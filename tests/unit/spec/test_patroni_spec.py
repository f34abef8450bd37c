"""`ha: patroni` in the spec: what it needs, and every mistake named by its field."""

from __future__ import annotations

import textwrap

import pytest

from shipyard.errors import SpecError
from shipyard.spec import Postgres, load_spec_text

GOOD = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    ha: patroni
    local: {host: 127.0.0.1, port: 5432, rest_port: 8008, data_dir: /srv/pg/primary}
    standby: {host: 127.0.0.1, port: 5433, rest_port: 8009, data_dir: /srv/pg/standby}
    patroni:
      etcd: [{host: 127.0.0.1, data_dir: /srv/etcd}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text), "s.yaml")
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_a_complete_ha_datastore_loads_with_patronis_defaults() -> None:
    store = load_spec_text(GOOD).stack("production").datastores["db"]
    assert isinstance(store, Postgres)
    assert store.ha == "patroni"
    assert store.patroni is not None
    assert (store.patroni.ttl, store.patroni.loop_wait, store.patroni.retry_timeout) == (30, 10, 10)
    assert store.patroni.proxy is not None
    assert (store.patroni.proxy.port, store.patroni.proxy.read_port) == (5000, 5001)
    assert store.patroni.etcd[0].client_port == 2379


def test_ha_patroni_needs_its_settings_a_standby_and_data_dirs() -> None:
    found = problems(
        """\
        name: shop
        datastores:
          db:
            kind: postgresql
            storage: {size: 1Gi}
            ha: patroni
        """
    )
    assert any(p.startswith("datastores.db.patroni: ha: patroni needs patroni.etcd") for p in found)
    assert any(p.startswith("datastores.db.standby: ha: patroni needs a standby") for p in found)
    assert "datastores.db.local.data_dir: ha: patroni needs each node's data directory" in found


def test_settings_without_the_switch_and_standbys_without_patroni() -> None:
    found = problems(
        GOOD.replace("    ha: patroni\n", "").replace(
            "    patroni:", "    standbys: [{host: 127.0.0.1, port: 5434, data_dir: /c}]\n    patroni:"
        )
    )
    assert any(p.startswith("datastores.db.ha: patroni is set but ha is none") for p in found)
    assert any(p.startswith("datastores.db.standbys: more standbys need ha: patroni") for p in found)


def test_only_loopback_or_private_addresses() -> None:
    found = problems(
        GOOD.replace("standby: {host: 127.0.0.1", "standby: {host: 8.8.8.8")
        .replace("etcd: [{host: 127.0.0.1", "etcd: [{host: 0.0.0.0")
        .replace("patroni:\n", "patroni:\n      proxy: {host: db.example.com}\n")
    )
    assert any(p.startswith("datastores.db.standby.host: 8.8.8.8 is a public address") for p in found)
    assert any(
        p.startswith("datastores.db.patroni.etcd[0].host: 0.0.0.0 listens on every interface") for p in found
    )
    assert any(
        p.startswith("datastores.db.patroni.proxy.host: 'db.example.com' is not an IP address") for p in found
    )
    # Private networks are fine.
    load_spec_text(GOOD.replace("127.0.0.1", "10.1.2.3"))


def test_two_listeners_on_one_address() -> None:
    # Both nodes on one host with Patroni's default REST port, and etcd on a PostgreSQL port.
    found = problems(
        GOOD.replace(", rest_port: 8009", "")
        .replace(", rest_port: 8008", "")
        .replace(
            "{host: 127.0.0.1, data_dir: /srv/etcd}", "{host: 127.0.0.1, client_port: 5433, data_dir: /e}"
        )
    )
    assert (
        "datastores.db.standby.rest_port: 127.0.0.1:8008 (Patroni's REST API) is already taken by"
        " datastores.db.local.rest_port: give each its own" in found
    )
    assert any(
        p.startswith("datastores.db.patroni.etcd[0].client_port: 127.0.0.1:5433 (etcd (clients))")
        for p in found
    )


def test_timings_that_would_lose_a_healthy_leader_lock() -> None:
    found = problems(GOOD.replace("    patroni:\n", "    patroni:\n      ttl: 10\n      loop_wait: 5\n"))
    assert any(
        p.startswith("datastores.db.patroni: ttl (10s) must be at least loop_wait + 2 x retry_timeout (25s)")
        for p in found
    )


def test_pg_rewind_needs_wal_log_hints() -> None:
    found = problems(
        GOOD.replace("    ha: patroni\n", "    ha: patroni\n    settings: {wal_log_hints: 'off'}\n")
    )
    assert any(
        p.startswith("datastores.db.settings.wal_log_hints: ha: patroni needs wal_log_hints on")
        for p in found
    )


def test_a_password_written_in_is_refused_without_being_echoed() -> None:
    found = problems(GOOD.replace("    patroni:\n", "    patroni:\n      restapi_password: hunter2-sesame\n"))
    assert any(
        p.startswith("datastores.db.patroni.restapi_password: 'restapi_password' holds a secret")
        for p in found
    )
    assert not any("hunter2" in p for p in found)
    ok = GOOD.replace("    patroni:\n", "    patroni:\n      restapi_password: '${env:REST_PW}'\n")
    store = load_spec_text(ok).stack("production").datastores["db"]
    assert isinstance(store, Postgres)
    assert store.patroni is not None
    assert store.patroni.restapi_password == "${env:REST_PW}"
