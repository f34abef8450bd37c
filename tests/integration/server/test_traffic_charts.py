"""A service's traffic history on the dashboard and in the API, over the real app and a real store
(SQLite, and PostgreSQL on loopback): a known history is written with the store's own
`record_minutes`, then read back exactly from the services page's SVG (each point's data-x and
data-y) and from `GET /traffic/{service}`.

The history, in 5-minute intervals an hour back (`BASE`), so the real clock's 6-hour window holds it:

* BASE: 3 of its 5 minutes recorded, 100, 200 and 300 requests timed at 10, 20 and 50 ms, 10 5xx:
  an error rate of 10/600 and a p99 of 50 ms (the summed histograms' p99, not the minutes' mean);
* BASE+300: no minute recorded, a gap;
* BASE+600: one minute recorded with no request: no error rate or latency, a gap in the lines too;
* BASE+900: 50 requests, all 5xx, all slower than the last bound: 100 %, and a p99 of "at least
  5000 ms".
"""

from __future__ import annotations

import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.monitor import TrafficMinute, record_minutes
from shipyard.rollout import LATENCY_BUCKETS_MS
from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token

ORIGIN = "http://testserver"
SVG = "{http://www.w3.org/2000/svg}"
SPEC = """\
name: shop
services:
  web: {role: web, run: "exec python3 -m http.server 8080", port: 8080}
  api: {role: api, run: "exec python3 -m http.server 8081", port: 8081}
  mailer: {role: worker, run: "exec sleep 1000"}
environments:
  test: {}
"""
BASE = (int(time.time()) // 300) * 300 - 3600


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def histogram(**counts: int) -> tuple[int, ...]:
    """Requests per bucket, by the bucket's upper bound (`ms_10=100`; `open` for the last one)."""
    buckets = [0] * len(LATENCY_BUCKETS_MS)
    for name, count in counts.items():
        index = len(LATENCY_BUCKETS_MS) - 1 if name == "open" else LATENCY_BUCKETS_MS.index(float(name[3:]))
        buckets[index] = count
    return tuple(buckets)


HISTORY = [
    TrafficMinute("web", at(BASE), 100, 1, histogram(ms_10=100)),
    TrafficMinute("web", at(BASE + 60), 200, 2, histogram(ms_20=200)),
    TrafficMinute("web", at(BASE + 120), 300, 7, histogram(ms_50=300)),
    TrafficMinute("web", at(BASE + 600), 0, 0, histogram()),
    TrafficMinute("web", at(BASE + 900), 50, 50, histogram(open=50)),
]


@dataclass
class Served:
    client: TestClient
    admin: dict[str, str]
    client_token: dict[str, str]


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    """The app on the spec, over SQLite and over a real PostgreSQL (conftest's `database_url`)."""
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    app = create_app(ServerConfig(database_url=database_url, spec=spec, environment="test"))
    sessions = app.state.sessions
    assert record_minutes(sessions, "shop", "test", HISTORY) == len(HISTORY)
    # Another environment's and another stack's minutes are not this server's.
    record_minutes(
        sessions, "shop", "staging", [TrafficMinute("web", at(BASE + 300), 9, 9, histogram(ms_1=9))]
    )
    record_minutes(sessions, "other", "test", [TrafficMinute("web", at(BASE + 300), 9, 9, histogram(ms_1=9))])
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
        client = create_token(session, "web", "client")
    with TestClient(app) as test_client:
        yield Served(test_client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {client}"})
    app.state.engine.dispose()


def chart(page: str, key: str) -> ET.Element:
    found = re.search(rf'<svg[^>]*data-chart="{key}".*?</svg>', page, re.DOTALL)
    assert found is not None, f"no chart {key}"
    return ET.fromstring(found.group(0))


def values(svg: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(c.get("data-x") or "nan"), float(c.get("data-y") or "nan")) for c in svg.iter(f"{SVG}circle")
    ]


def test_the_services_page_charts_each_services_error_rate_and_p99_with_gaps(served: Served) -> None:
    login = served.client.post(
        "/ui/login", data={"token": served.admin["Authorization"][7:], "next": "/ui/services"},
        headers={"Origin": ORIGIN}, follow_redirects=False,
    )  # fmt: skip
    assert login.status_code == 303
    page = served.client.get("/ui/services").text

    errors = chart(page, "traffic-errors-web")
    assert values(errors) == [(BASE, 10 / 600), (BASE + 900, 1.0)]
    # The interval over the limit a release is judged by (the spec's default, 2 %) is marked.
    marks = [c.get("class") for c in errors.iter(f"{SVG}circle")]
    assert marks == ["point", "point fail"]
    assert [g.get("data-limit") for g in errors.iter(f"{SVG}g") if g.get("data-limit")] == ["0.02"]
    # Not joined across the gap: the line moves (M) to the second point instead of drawing to it.
    line = next(p for p in errors.iter(f"{SVG}path") if p.get("class") == "line")
    assert (line.get("d") or "").count("M") == 2
    assert "L" not in (line.get("d") or "")
    # The legend says how much of the window was recorded: 5 minutes of 6 hours.
    assert "5 of 360 min recorded" in ET.tostring(errors, encoding="unicode")

    p99 = chart(page, "traffic-p99-web")
    assert values(p99) == [(BASE, 50.0), (BASE + 900, 5000.0)]
    titles = [c.findtext(f"{SVG}title") or "" for c in p99.iter(f"{SVG}circle")]
    assert "p99 at most 50 ms; p50 at most 20 ms; 600 of 600 requests timed" in titles[0]
    assert "p99 at least 5000 ms" in titles[1]

    # A service with nothing recorded says so; a worker takes no traffic and has no chart.
    for key in ("traffic-errors-api", "traffic-p99-api"):
        empty = chart(page, key)
        assert values(empty) == []
        assert "no traffic recorded in the last 6 h" in (empty.findtext(f"{SVG}desc") or "")
    assert 'data-chart="traffic-errors-mailer"' not in page


def test_the_api_gives_every_interval_with_gaps_as_nulls(served: Served) -> None:
    answer = served.client.get("/traffic/web?hours=2&step_seconds=300", headers=served.admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["service"], body["stack"], body["environment"]) == ("web", "shop", "test")
    assert (body["step_seconds"], body["minutes_recorded"], len(body["points"])) == (300, 5, 24)
    starts = [point["start_at"] for point in body["points"]]
    assert starts[0] == body["start_at"]
    assert all(s.endswith("Z") for s in starts)
    by_start = {point.pop("start_at"): point for point in body["points"]}
    stamp = lambda epoch: at(epoch).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert by_start[stamp(BASE)] == {
        "minutes_recorded": 3, "requests": 600, "errors": 10, "error_rate": 10 / 600, "logged": 600,
        "p50_ms": 20.0, "p99_ms": 50.0,
    }  # fmt: skip
    gap = dict.fromkeys(("requests", "errors", "error_rate", "logged", "p50_ms", "p99_ms"))
    assert by_start[stamp(BASE + 300)] == {"minutes_recorded": 0, **gap}
    assert by_start[stamp(BASE + 600)] == {
        "minutes_recorded": 1, "requests": 0, "errors": 0, "error_rate": None, "logged": 0,
        "p50_ms": None, "p99_ms": None,
    }  # fmt: skip
    assert by_start[stamp(BASE + 900)] == {
        "minutes_recorded": 1, "requests": 50, "errors": 50, "error_rate": 1.0, "logged": 50,
        "p50_ms": 5000.0, "p99_ms": 5000.0,
    }  # fmt: skip
    recorded = [start for start, point in by_start.items() if point["minutes_recorded"]]
    assert recorded == [stamp(BASE), stamp(BASE + 600), stamp(BASE + 900)]

    # Minute by minute: the first minute alone.
    minutes = served.client.get("/traffic/web?hours=2&step_seconds=60", headers=served.admin).json()
    first = next(p for p in minutes["points"] if p["start_at"] == stamp(BASE))
    assert (first["requests"], first["errors"], first["p99_ms"]) == (100, 1, 10.0)
    assert len(minutes["points"]) == 120


def test_the_api_refuses_what_it_cannot_answer(served: Served, tmp_path: Path) -> None:
    client = served.client
    nothing = client.get("/traffic/api", headers=served.admin).json()
    assert nothing["minutes_recorded"] == 0
    assert all(p["requests"] is None for p in nothing["points"])
    typo = client.get("/traffic/wbe", headers=served.admin)
    assert typo.status_code == 404
    assert typo.headers["content-type"] == "application/problem+json"
    assert "did you mean 'web'" in typo.json()["detail"]
    assert client.get("/traffic/mailer", headers=served.admin).status_code == 404  # a worker
    assert client.get("/traffic/web?hours=49", headers=served.admin).status_code == 422
    assert client.get("/traffic/web?step_seconds=90", headers=served.admin).status_code == 422
    assert client.get("/traffic/web", headers=served.client_token).status_code == 403
    assert client.get("/traffic/web").status_code == 401

    operation = client.get("/openapi.json").json()["paths"]["/traffic/{service}"]["get"]
    assert operation["security"]
    assert {"200", "401", "403", "404", "409", "422", "503"} <= set(operation["responses"])

    no_spec = create_app(ServerConfig(database_url=f"sqlite:///{tmp_path / 'bare.db'}"))
    with no_spec.state.sessions() as session:
        token = create_token(session, "ops", "admin")
    with TestClient(no_spec) as bare:
        refused = bare.get("/traffic/web", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 409
    assert "shipyard serve -f SPEC" in refused.json()["detail"]
    no_spec.state.engine.dispose()
