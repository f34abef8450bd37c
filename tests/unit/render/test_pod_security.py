"""Pods a real image can run under the restricted Pod Security Standard: numeric ids, writable
directories beside a read-only root filesystem, and a ServiceAccount of their own without a token."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import SpecError
from shipyard.render import render_kubernetes
from shipyard.spec import Spec, load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

SHOP = """
name: shop
services:
  web:
    role: web
    image: shop/web:1
    port: 3000
    migration: [npx, prisma, migrate, deploy]
    run_as_user: 1001
    run_as_group: 1001
    fs_group: 2000
    writable: [/tmp, /app/.next/cache, {path: /var/cache/thumbs, size_limit: 1Gi}]
    volumes:
      tmp: {size: 1Gi, mount: /srv/tmp}
    cron:
      nightly: {schedule: "0 3 * * *", command: [./nightly]}
  operator:
    role: worker
    image: shop/operator:1
    service_account: {token: true}
environments:
  prod: {}
"""


@pytest.fixture(scope="module")
def shop() -> list[dict[str, Any]]:
    return render_kubernetes(spec_from(SHOP).stack("prod"))


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        pod: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = obj["spec"]["template"]["spec"]
    return pod


def test_the_ids_the_spec_gives_are_the_pods(shop: list[dict[str, Any]]) -> None:
    context = _pod(by_kind(shop, "Deployment")["web"])["securityContext"]
    assert context == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1001,
        "runAsGroup": 1001,
        "fsGroup": 2000,
    }
    # Its cron jobs run the same image: the same ids.
    assert _pod(by_kind(shop, "CronJob")["web-nightly"])["securityContext"] == context


def test_without_ids_the_image_decides(shop: list[dict[str, Any]]) -> None:
    context = _pod(by_kind(shop, "Deployment")["operator"])["securityContext"]
    assert context == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group", "fs_group"])
def test_root_ids_are_refused_naming_the_field(field: str) -> None:
    text = SHOP.replace(f"    {field}: ", f"    {field}: 0  # was ")
    with pytest.raises(SpecError) as caught:
        spec_from(text)
    (issue,) = caught.value.issues
    assert issue.path == f"services.web.{field}"
    assert "greater than or equal to 1" in issue.message


def test_seed_000s_named_user_gets_its_uid() -> None:
    """Seed 000's frontend image ends `USER nextjs` (uid 1001, group nodejs 1001)."""
    normaldance = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    for env in normaldance.environments:
        pod = _pod(by_kind(render_kubernetes(normaldance.stack(env)), "Deployment")["frontend"])
        assert pod["securityContext"]["runAsUser"] == 1001
        assert pod["securityContext"]["runAsGroup"] == 1001


def test_writable_directories_are_empty_dirs_in_every_container(shop: list[dict[str, Any]]) -> None:
    pod = _pod(by_kind(shop, "Deployment")["web"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The service's own volume is named `tmp`: the /tmp emptyDir gets another name.
    assert volumes["tmp"] == {"name": "tmp", "persistentVolumeClaim": {"claimName": "web-tmp"}}
    assert volumes["tmp-2"] == {"name": "tmp-2", "emptyDir": {}}
    assert volumes["app-next-cache"] == {"name": "app-next-cache", "emptyDir": {}}
    assert volumes["var-cache-thumbs"] == {"name": "var-cache-thumbs", "emptyDir": {"sizeLimit": "1Gi"}}
    writable = [
        {"name": "tmp-2", "mountPath": "/tmp"},
        {"name": "app-next-cache", "mountPath": "/app/.next/cache"},
        {"name": "var-cache-thumbs", "mountPath": "/var/cache/thumbs"},
    ]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [*writable, {"name": "tmp", "mountPath": "/srv/tmp"}]
    (migrate,) = pod["initContainers"]
    assert migrate["volumeMounts"] == writable
    job = _pod(by_kind(shop, "CronJob")["web-nightly"])
    assert job["containers"][0]["volumeMounts"] == writable
    assert [v["name"] for v in job["volumes"]] == ["tmp-2", "app-next-cache", "var-cache-thumbs"]


def test_tmp_is_writable_even_when_not_listed(shop: list[dict[str, Any]]) -> None:
    pod = _pod(by_kind(shop, "Deployment")["operator"])
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


@pytest.mark.parametrize("example", ["apricode", "normaldance"])
def test_next_js_services_write_their_cache(example: str) -> None:
    spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    name = {"apricode": "app", "normaldance": "frontend"}[example]
    pod = _pod(by_kind(render_kubernetes(spec.stack("production")), "Deployment")[name])
    assert {"name": "app-next-cache", "mountPath": "/app/.next/cache"} in pod["containers"][0]["volumeMounts"]


@pytest.mark.parametrize(
    ("writable", "message"),
    [
        ("[tmp]", "does not match the expected form"),
        ("[/app/cache/]", "does not match the expected form"),
        ("[/app/../etc]", "without . or .. parts"),
        ("[/cache, /cache]", "listed twice"),
        ("[/srv/tmp]", "where volume 'tmp' is mounted"),
    ],
)
def test_bad_writable_paths_are_refused(writable: str, message: str) -> None:
    text = SHOP.replace(
        "writable: [/tmp, /app/.next/cache, {path: /var/cache/thumbs, size_limit: 1Gi}]",
        f"writable: {writable}",
    )
    with pytest.raises(SpecError) as caught:
        spec_from(text)
    (issue,) = caught.value.issues
    assert issue.path.startswith("services.web.writable")
    assert message in issue.message


def test_each_service_has_its_own_account_without_a_token(shop: list[dict[str, Any]]) -> None:
    accounts = by_kind(shop, "ServiceAccount")
    assert accounts["web"]["automountServiceAccountToken"] is False
    assert accounts["web"]["metadata"]["labels"]["app.kubernetes.io/name"] == "web"
    for obj in (by_kind(shop, "Deployment")["web"], by_kind(shop, "CronJob")["web-nightly"]):
        pod = _pod(obj)
        assert pod["serviceAccountName"] == "web"
        assert pod["automountServiceAccountToken"] is False


def test_a_token_is_mounted_only_when_asked(shop: list[dict[str, Any]]) -> None:
    assert by_kind(shop, "ServiceAccount")["operator"]["automountServiceAccountToken"] is True
    pod = _pod(by_kind(shop, "Deployment")["operator"])
    assert pod["serviceAccountName"] == "operator"
    assert pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("example", ["apricode", "normaldance", "salespot"])
def test_every_rendered_service_has_an_account(example: str) -> None:
    spec: Spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    for env in spec.environments:
        objects = render_kubernetes(spec.stack(env))
        accounts = by_kind(objects, "ServiceAccount")
        workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
        for name, service in spec.stack(env).services.items():
            if service.image is None:
                continue
            assert accounts[name]["automountServiceAccountToken"] is service.service_account.token
            assert _pod(workloads[name])["serviceAccountName"] == name
