"""A Kubernetes API server on loopback that answers with recorded responses, and a kubeconfig for it.

The answers are the API server's recorded JSON (`tests/unit/rollout/recorded/`), queued per
(method, path): each request takes the next answer, the last one is repeated. Every request is
kept (method, path with query, headers, JSON body) so a test sees exactly what the official
`kubernetes` client sent. A request with nothing queued gets a 500, which the client reports.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

RECORDED = Path(__file__).resolve().parents[1] / "unit" / "rollout" / "recorded"
TOKEN = "recorded-token"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class RecordedAPI:
    """Answers (method, path without query) with recorded responses, in the order queued."""

    answers: dict[tuple[str, str], list[tuple[int, bytes]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, recording: str | dict[str, Any], status: int = 200) -> None:
        """Queue an answer: a recording's file name, or an object (a recording changed by the test)."""
        payload = (
            (RECORDED / recording).read_bytes()
            if isinstance(recording, str)
            else json.dumps(recording).encode()
        )
        self.answers.setdefault((method, path), []).append((status, payload))

    def sent(self) -> list[tuple[str, str]]:
        """(method, path without query) of every request so far."""
        return [(r.method, r.path.split("?", 1)[0]) for r in self.requests]

    def _next(self, method: str, path: str) -> tuple[int, bytes]:
        with self.lock:
            queued = self.answers.get((method, path.split("?", 1)[0]))
            if not queued:
                return 500, json.dumps({"kind": "Status", "code": 500, "message": "no recording"}).encode()
            return queued.pop(0) if len(queued) > 1 else queued[0]


def recording(name: str) -> dict[str, Any]:
    """A recorded object, to change and queue as an answer."""
    loaded: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return loaded


def _handler(api: RecordedAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            api.requests.append(
                Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status, payload = api._next(self.command, self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def recorded_api() -> Iterator[RecordedAPI]:
    """A RecordedAPI listening on a free loopback port until the block ends."""
    api = RecordedAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str) -> Path:
    """A kubeconfig with one context per (name -> API server URL), each with the recorded token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}} for name, url in contexts.items()],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "tester"}} for name in contexts],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --- the apricode example, released by `deploy --target kubernetes` ----------------------------

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@functools.cache
def apricode_without_gitops() -> Path:
    """examples/apricode without its `gitops:` sections: the same stack released by `deploy
    --target kubernetes`, which shipyard refuses where Argo CD syncs the environment."""
    spec = yaml.safe_load((_EXAMPLES / "apricode" / "shipyard.yaml").read_text())
    spec.pop("gitops", None)
    for overlay in spec.get("environments", {}).values():
        if isinstance(overlay, dict):
            overlay.pop("gitops", None)
    folder = Path(tempfile.mkdtemp(prefix="apricode-no-gitops-"))
    path = folder / "shipyard.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --- the apricode example's `app`, as the recordings have it -------------------------------------

APP_ROLLOUT = "/apis/argoproj.io/v1alpha1/namespaces/production/rollouts/app"
"""The Rollout of the apricode example's `app` in production."""
APP_APPLIED = [
    ("/api/v1/namespaces/production/configmaps/app-env", "apply-configmap-app-env.json"),
    ("/api/v1/namespaces/production/services/app", "apply-service-app.json"),
    ("/api/v1/namespaces/production/services/app-canary", "apply-service-app-canary.json"),
    ("/apis/networking.k8s.io/v1/namespaces/production/ingresses/app", "apply-ingress-app.json"),
    (
        "/apis/argoproj.io/v1alpha1/namespaces/production/analysistemplates/app",
        "apply-analysistemplate-app.json",
    ),
    (APP_ROLLOUT, "apply-rollout-app.json"),
    (
        "/apis/autoscaling/v2/namespaces/production/horizontalpodautoscalers/app",
        "apply-horizontalpodautoscaler-app.json",
    ),
    ("/apis/policy/v1/namespaces/production/poddisruptionbudgets/app", "apply-poddisruptionbudget-app.json"),
]
"""What a release of `app` applies, in order: (path, recorded answer)."""


def answer_app_deploy(api: RecordedAPI) -> None:
    """Queue the answers of a first release of `app`: no Rollout yet, then each apply."""
    api.answer("GET", APP_ROLLOUT, "status-404-rollout.json", status=404)
    for path, answer in APP_APPLIED:
        api.answer("PATCH", path, answer)


# --- a whole environment (`shipyard apply`) ------------------------------------------------------


def as_applied(obj: dict[str, Any], *, generation: int = 1) -> dict[str, Any]:
    """The API server's answer to a server-side apply of `obj`: the object with the fields the
    server adds (uid, resourceVersion, generation, creationTimestamp, the apply's managedFields).

    The recorded apply answers (`apply-*.json`) have this shape; an environment has too many
    objects to record each, and the client only reads the answer back as an object."""
    meta = dict(obj["metadata"])
    name = f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"
    meta.update(
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        resourceVersion=str(48211954 + zlib.crc32(name.encode()) % 100000),
        generation=generation,
        creationTimestamp="2025-06-02T09:14:07Z",
        managedFields=[
            {
                "manager": "shipyard",
                "operation": "Apply",
                "apiVersion": obj["apiVersion"],
                "time": "2025-06-03T14:02:11Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}},
            }
        ],
    )
    return {**obj, "metadata": meta}


def answer_stack_apply(api: RecordedAPI, objects: Iterable[dict[str, Any]]) -> list[str]:
    """Queue the answer to a server-side apply of each object; return their paths, in order."""
    paths = []
    for obj in objects:
        path = object_path(obj)
        api.answer("PATCH", path, as_applied(obj))
        paths.append(path)
    return paths


def object_path(obj: dict[str, Any]) -> str:
    """The API path of a rendered object, written out here (not shipyard's table) so a test of
    the applier compares it with an independent answer."""
    cluster_scoped = {"Namespace": "namespaces"}
    plurals = {
        "NetworkPolicy": "networkpolicies",
        "Ingress": "ingresses",
        "PodDisruptionBudget": "poddisruptionbudgets",
        "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    }
    kind, meta = str(obj["kind"]), obj["metadata"]
    prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    if kind in cluster_scoped:
        return f"{prefix}/{cluster_scoped[kind]}/{meta['name']}"
    plural = plurals.get(kind, kind.lower() + "s")
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
