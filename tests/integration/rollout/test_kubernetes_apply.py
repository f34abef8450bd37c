"""`shipyard apply` and `status` of a whole environment, through the official client's HTTP stack,
against a loopback server replaying the Kubernetes API's recorded answers (`support.kube_api`).

The server keeps every request as the `kubernetes` client sent it, so these tests assert the
exact sequence: the server-side applies (method, path, `fieldManager=shipyard&force=true`,
`application/apply-patch+yaml`, the rendered object as the body), the reads of the datastores'
status until they are ready, and that no Deployment or Rollout is sent before that. Nothing in
the client is replaced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from shipyard.errors import TargetError
from shipyard.ops import ApplyStack, Workspace, apply_stack, stack_status
from shipyard.render import KIND_ORDER, build_manifests, custom_resources
from shipyard.rollout import KubeConnection
from shipyard.rollout.targets.kubernetes_apply import (
    CORE_RESOURCES,
    ApplyEvent,
    StackApplier,
    object_path,
    read_status,
)
from shipyard.spec import Stack, load_spec
from support.kube_api import (
    TOKEN,
    RecordedAPI,
    answer_stack_apply,
    as_applied,
    recorded_api,
    write_kubeconfig,
)
from support.kube_api import object_path as expected_path

ROOT = Path(__file__).resolve().parents[3]
APRICODE = ROOT / "examples" / "apricode" / "shipyard.yaml"
APPLY = "application/apply-patch+yaml"
SSA = "?fieldManager=shipyard&force=true"
STS = "/apis/apps/v1/namespaces/production/statefulsets"
DATASTORES = [f"{STS}/postgres", f"{STS}/postgres-replica", f"{STS}/redis"]
WORKLOAD_KINDS = {"Deployment", "Rollout"}


@pytest.fixture
def api() -> Iterator[RecordedAPI]:
    with recorded_api() as recorded:
        yield recorded


def _client(url: str) -> ApiClient:
    configuration = Configuration(
        host=url, api_key={"BearerToken": TOKEN}, api_key_prefix={"BearerToken": "Bearer"}
    )
    return ApiClient(configuration)


@pytest.fixture(scope="module")
def apricode() -> Stack:
    stack: Stack = load_spec(APRICODE).stack("production")
    return stack


@pytest.fixture(scope="module")
def objects(apricode: Stack) -> list[dict[str, Any]]:
    return list(build_manifests(apricode, argo=True).objects)


def _answer_datastores_ready(api: RecordedAPI) -> None:
    # postgres is still starting on the first read, ready on the second.
    api.answer("GET", f"{STS}/postgres", "statefulset-postgres-starting.json")
    api.answer("GET", f"{STS}/postgres", "statefulset-postgres-ready.json")
    api.answer("GET", f"{STS}/postgres-replica", "statefulset-postgres-replica-ready.json")
    api.answer("GET", f"{STS}/redis", "statefulset-redis-ready.json")


def _applier(api: RecordedAPI, **kwargs: Any) -> StackApplier:
    return StackApplier(_client(api.url), timeout=5, poll_s=0.01, **kwargs)


# --- paths ---------------------------------------------------------------------------------------


def test_every_kind_rendered_has_an_api_path() -> None:
    custom = {kind for kind, _ in custom_resources()}
    assert set(KIND_ORDER) <= set(CORE_RESOURCES) | custom
    assert not set(CORE_RESOURCES) & custom  # a custom resource's path is its CRD's, said once


def test_paths_are_namespaced_except_cluster_scoped_kinds(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        assert object_path(obj) == expected_path(obj)
    assert object_path(objects[0]) == "/api/v1/namespaces/production"  # the Namespace itself
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "db", "namespace": "n"},
    }
    assert object_path(cluster) == "/apis/postgresql.cnpg.io/v1/namespaces/n/clusters/db"
    with pytest.raises(TargetError, match=r"Widget w \(example\.com/v1\): shipyard does not know its API"):
        object_path({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


# --- apply ---------------------------------------------------------------------------------------


def test_apply_sends_every_object_in_order_and_waits_for_the_datastores(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    paths = answer_stack_apply(api, objects)
    _answer_datastores_ready(api)
    events: list[ApplyEvent] = []
    result = _applier(api).apply(objects, services=apricode.services, on_progress=events.append)

    split = max(i for i, obj in enumerate(objects) if obj["kind"] == "StatefulSet") + 1
    expected = [("PATCH", path + SSA) for path in paths[:split]]
    expected += [
        ("GET", DATASTORES[0]),
        ("GET", DATASTORES[0]),
        ("GET", DATASTORES[1]),
        ("GET", DATASTORES[2]),
    ]
    expected += [("PATCH", path + SSA) for path in paths[split:]]
    assert [(r.method, r.path) for r in api.requests] == expected

    patches = [r for r in api.requests if r.method == "PATCH"]
    for request, obj in zip(patches, objects, strict=True):
        assert request.headers["content-type"] == APPLY
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.body == obj  # the rendered object, whole
    # The datastores were read until ready before any workload was sent.
    last_read = max(i for i, r in enumerate(api.requests) if r.method == "GET")
    first_workload = min(
        i for i, r in enumerate(api.requests) if r.method == "PATCH" and r.body["kind"] in WORKLOAD_KINDS
    )
    assert last_read < first_workload
    assert [obj["kind"] for obj in objects[split:]].count("Rollout") == 1

    assert len(result.applied) == len(objects)
    assert [(r.kind, r.name, r.ready, r.desired) for r in result.waited] == [
        ("StatefulSet", "postgres", 1, 1),
        ("StatefulSet", "postgres-replica", 1, 1),
        ("StatefulSet", "redis", 1, 1),
    ]
    assert [e.stage for e in events if e.name == "postgres" and e.stage != "applied"] == ["waiting", "ready"]
    last = objects[-1]
    total = len(objects)
    assert events[-1] == ApplyEvent("applied", last["kind"], last["metadata"]["name"], total, total)


def test_apply_is_idempotent(api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]) -> None:
    answer_stack_apply(api, objects)
    for path in DATASTORES:  # already ready: one read each
        api.answer("GET", path, f"statefulset-{path.rsplit('/', 1)[1]}-ready.json")
    _applier(api).apply(objects, services=apricode.services)
    first = [(r.method, r.path, r.body) for r in api.requests]
    api.requests.clear()
    _applier(api).apply(objects, services=apricode.services)
    assert [(r.method, r.path, r.body) for r in api.requests] == first


def test_dry_run_asks_the_server_to_check_and_waits_for_nothing(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    paths = answer_stack_apply(api, objects)
    result = _applier(api).apply(objects, services=apricode.services, dry_run=True)
    assert [(r.method, r.path) for r in api.requests] == [
        ("PATCH", path + SSA + "&dryRun=All") for path in paths
    ]
    assert all(r.headers["content-type"] == APPLY for r in api.requests)
    assert result.dry_run
    assert result.waited == ()
    assert result.would_wait == (
        "StatefulSet production/postgres",
        "StatefulSet production/postgres-replica",
        "StatefulSet production/redis",
    )


def test_a_refused_object_stops_the_apply_with_one_line(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    answer_stack_apply(api, objects)
    api.answers.pop(("PATCH", f"{STS}/postgres"))
    api.answer("PATCH", f"{STS}/postgres", "status-422-statefulset-postgres.json", status=422)
    with pytest.raises(TargetError) as raised:
        _applier(api).apply(objects, services=apricode.services)
    message = raised.value.message
    assert "\n" not in message
    assert message.startswith(
        f"cannot apply StatefulSet production/postgres: the Kubernetes API at {api.url} answered"
        ' HTTP 422 Unprocessable Entity: StatefulSet.apps "postgres" is invalid: spec: Forbidden:'
    )
    assert api.requests[-1].path == f"{STS}/postgres{SSA}"  # nothing after the refused object
    assert not any(r.method == "GET" for r in api.requests)


def test_a_server_error_on_a_workload_names_it(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    answer_stack_apply(api, objects)
    _answer_datastores_ready(api)
    rollout = "/apis/argoproj.io/v1alpha1/namespaces/production/rollouts/app"
    api.answers.pop(("PATCH", rollout))
    api.answer("PATCH", rollout, "status-500-etcd-timeout.json", status=500)
    with pytest.raises(TargetError) as raised:
        _applier(api).apply(objects, services=apricode.services)
    assert raised.value.message == (
        f"cannot apply Rollout production/app: the Kubernetes API at {api.url} answered HTTP 500"
        " Internal Server Error: etcdserver: request timed out"
    )
    assert api.requests[-1].path == rollout + SSA


def test_a_missing_crd_says_which_operator_to_install(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    answer_stack_apply(api, objects)
    path = "/apis/external-secrets.io/v1/namespaces/production/externalsecrets/apricode-app"
    api.answers.pop(("PATCH", path))
    api.answer("PATCH", path, "status-404-no-crd.json", status=404)
    with pytest.raises(TargetError) as raised:
        _applier(api).apply(objects, services=apricode.services)
    message = raised.value.message
    assert message.startswith("cannot apply ExternalSecret production/apricode-app: the Kubernetes API at")
    assert "HTTP 404 Not Found: the server could not find the requested resource" in message
    assert message.endswith("(is the operator that defines this kind installed, with its CRDs?)")


def test_a_datastore_that_never_gets_ready_stops_before_the_workloads(
    api: RecordedAPI, apricode: Stack, objects: list[dict[str, Any]]
) -> None:
    answer_stack_apply(api, objects)
    api.answer("GET", f"{STS}/postgres", "statefulset-postgres-starting.json")
    with pytest.raises(TargetError) as raised:
        _applier(api, wait_s=0.05).apply(objects, services=apricode.services)
    message = raised.value.message
    assert message.startswith("StatefulSet production/postgres is not ready after 0.05 s (0 of 1 ready")
    assert api.url in message
    assert not any(r.method == "PATCH" and r.body["kind"] in WORKLOAD_KINDS for r in api.requests)
    assert sum(1 for r in api.requests if r.method == "GET") >= 2  # polled, not read once


def test_a_cloudnative_pg_cluster_is_waited_on_by_its_ready_instances(api: RecordedAPI) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-production"}}
    cluster = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "db", "namespace": "shop-production"},
        "spec": {
            "instances": 3,
            "imageName": "ghcr.io/cloudnative-pg/postgresql:15.8",
            "storage": {"size": "20Gi"},
        },
    }
    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop-production"},
        "spec": {"replicas": 2},
    }
    answer_stack_apply(api, [namespace, cluster, web])
    path = "/apis/postgresql.cnpg.io/v1/namespaces/shop-production/clusters/db"
    api.answer("GET", path, "cluster-db-starting.json")
    api.answer("GET", path, "cluster-db-ready.json")
    result = _applier(api).apply([namespace, cluster, web], services={"web"})
    assert [(r.method, r.path.split("?")[0]) for r in api.requests] == [
        ("PATCH", "/api/v1/namespaces/shop-production"),
        ("PATCH", path),
        ("GET", path),
        ("GET", path),
        ("PATCH", "/apis/apps/v1/namespaces/shop-production/deployments/web"),
    ]
    assert [(r.kind, r.ready, r.desired) for r in result.waited] == [("Cluster", 3, 3)]


def test_a_service_statefulset_is_not_waited_on(api: RecordedAPI) -> None:
    # It may need what is applied after the datastores (a Pooler); waiting would never end.
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "media", "namespace": "n", "labels": {"app.kubernetes.io/name": "media"}},
        "spec": {"replicas": 1},
    }
    answer_stack_apply(api, [sts])
    result = _applier(api).apply([sts], services={"media"})
    assert [r.method for r in api.requests] == ["PATCH"]
    assert result.waited == ()


# --- status --------------------------------------------------------------------------------------


def _answer_status(api: RecordedAPI, objects: list[dict[str, Any]]) -> None:
    api.answer(
        "GET", "/apis/argoproj.io/v1alpha1/namespaces/production/rollouts/app", "rollout-app-healthy.json"
    )
    for path in DATASTORES:
        api.answer("GET", path, f"statefulset-{path.rsplit('/', 1)[1]}-ready.json")
    api.answer(
        "GET",
        "/apis/autoscaling/v2/namespaces/production/horizontalpodautoscalers/app",
        "horizontalpodautoscaler-app-scaling.json",
    )
    api.answer(
        "GET", "/apis/networking.k8s.io/v1/namespaces/production/ingresses/app", "ingress-app-published.json"
    )
    for obj in objects:
        if obj["kind"] == "Deployment":  # the exporters: ready, as the server would report them
            replicas = obj["spec"].get("replicas", 1)
            ready = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas}
            api.answer(
                "GET",
                expected_path(obj),
                {**as_applied(obj), "status": {**ready, "updatedReplicas": replicas}},
            )
    cron = "/apis/batch/v1/namespaces/production/cronjobs"
    api.answer("GET", f"{cron}/app-cleanup-sessions", "cronjob-app-cleanup-sessions.json")
    for obj in objects:
        if obj["kind"] == "CronJob" and obj["metadata"]["name"] != "app-cleanup-sessions":
            api.answer("GET", f"{cron}/{obj['metadata']['name']}", "status-404-cronjob.json", status=404)


def test_status_reads_back_workloads_autoscalers_ingress_and_cron_jobs(
    api: RecordedAPI, objects: list[dict[str, Any]]
) -> None:
    _answer_status(api, objects)
    state = read_status(_client(api.url), objects, namespace="production", timeout=5)
    assert all(r.method == "GET" and r.body is None for r in api.requests)
    workloads = [(w.kind, w.name, w.found, w.ready, w.desired, w.phase) for w in state.workloads]
    assert workloads == [
        ("StatefulSet", "postgres", True, 1, 1, "Healthy"),
        ("StatefulSet", "postgres-replica", True, 1, 1, "Healthy"),
        ("StatefulSet", "redis", True, 1, 1, "Healthy"),
        *(
            (o["kind"], o["metadata"]["name"], True, 1, 1, "Healthy")
            for o in objects
            if o["kind"] == "Deployment"
        ),
        ("Rollout", "app", True, 5, 5, "Healthy"),
    ]
    # one GET per workload, autoscaler, Ingress and CronJob, in apply order
    read = [
        o
        for o in objects
        if o["kind"]
        in {"StatefulSet", "Deployment", "Rollout", "HorizontalPodAutoscaler", "Ingress", "CronJob"}
    ]
    assert [r.path for r in api.requests] == [expected_path(o) for o in read]
    (hpa,) = state.autoscalers
    assert (hpa.current, hpa.desired, hpa.minimum, hpa.maximum) == (4, 5, 3, 10)
    (ingress,) = state.ingresses
    assert ingress.addresses == ("203.0.113.17", "lb-7f3a.elb.eu-central-1.amazonaws.com")
    jobs = {c.name: c for c in state.cron_jobs}
    cleanup = jobs["app-cleanup-sessions"]
    assert cleanup.last_schedule_at == dt.datetime(2025, 6, 3, 14, 0, tzinfo=dt.UTC)
    assert cleanup.last_successful_at == dt.datetime(2025, 6, 3, 14, 0, 9, tzinfo=dt.UTC)
    assert not jobs["backup-verify"].found
    assert state.healthy


# --- through ops and a kubeconfig ----------------------------------------------------------------


def test_ops_apply_and_status_through_a_kubeconfig(
    api: RecordedAPI, objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
    kube = KubeConnection(str(kubeconfig))
    ws = Workspace.open(
        APRICODE, "production", database_url=f"sqlite:///{tmp_path / 'state.db'}", actor="cli:t"
    )
    answer_stack_apply(api, objects)
    _answer_datastores_ready(api)
    applied = apply_stack(ws, ApplyStack(poll_s=0.01), kube=kube)
    assert applied.summary() == (
        f"applied {len(objects)} objects to production (namespace production) at {api.url},"
        " after waiting for 3 datastore(s)"
    )
    assert [(a.kind, a.name) for a in applied.applied] == [
        (o["kind"], o["metadata"]["name"]) for o in objects
    ]
    api.requests.clear()
    _answer_status(api, objects)
    view = stack_status(ws, kube=kube)
    assert view.healthy
    dumped = view.model_dump(mode="json")
    assert dumped["cron_jobs"][0]["name"] == "app-cleanup-sessions"
    assert dumped["cron_jobs"][0]["last_successful_at"] == "2025-06-03T14:00:09Z"


def test_as_applied_keeps_the_object() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {}}
    answered = as_applied(obj)
    assert answered["data"] == {}
    assert answered["metadata"]["name"] == "c"
