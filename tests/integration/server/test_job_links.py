"""Every answer that names a job links to what can be done with it, the cancel route included
(`POST /jobs/{job_id}/cancel`, the dashboard's button): OpenAPI links a client or schemathesis'
stateful phase follows from a started job to its cancellation. Each link of the served document
names an operation the document has, with the path parameters that operation takes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.server import ServerConfig, create_app


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("links")
    application = create_app(
        ServerConfig(database_url=f"sqlite:///{base / 'state.db'}", job_log_dir=base / "jobs")
    )
    try:
        with TestClient(application) as client:
            yield client.get("/openapi.json").json()["paths"]
    finally:
        application.state.engine.dispose()


def _answers_with_links(paths: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if "links" in response:
                    yield f"{method.upper()} {path} {status}", response["links"]


def test_every_answer_naming_a_job_links_to_its_cancellation(paths: dict[str, Any]) -> None:
    naming_a_job = {answer: links for answer, links in _answers_with_links(paths) if "GetJob" in links}
    assert {"GET /jobs 200", "POST /backups 202"} <= naming_a_job.keys(), sorted(naming_a_job)
    for answer, links in naming_a_job.items():
        cancel = links.get("CancelJob")
        assert cancel is not None, answer
        assert cancel["operationRef"] == "#/paths/~1jobs~1{job_id}~1cancel/post", answer
        assert cancel["parameters"] == links["GetJob"]["parameters"], answer  # the same job


def test_every_link_names_an_operation_of_the_document_with_its_path_parameters(
    paths: dict[str, Any],
) -> None:
    seen = 0
    for answer, links in _answers_with_links(paths):
        for name, link in links.items():
            _, pointer, method = link["operationRef"].rsplit("/", 2)
            path = pointer.replace("~1", "/").replace("~0", "~")
            assert method in paths.get(path, {}), (answer, name, link)
            wanted = set(re.findall(r"\{(\w+)\}", path))
            given = {key for key in link["parameters"] if "." not in key}  # header.If-Match is not a path's
            assert wanted == given, (answer, name, link)
            seen += 1
    assert seen > 20  # the document has its links at all
