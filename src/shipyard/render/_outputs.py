"""The three written outputs: plain manifests, a Kustomize tree and a Helm chart.

All three start from `build_manifests` for every environment, so they hold the same objects.
Kustomize and Helm keep one environment's objects as the base and each environment's difference
from it as data (JSON patches; Helm values), computed generically rather than by template logic:
nothing can be said in one output that the others do not say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RenderError
from ..spec import Spec
from ._common import Object
from ._diff import json_patch, values_patch
from ._kubernetes import KIND_ORDER, Manifests, SkippedService, build_manifests, object_key
from ._schema import DEFAULT_KUBE_VERSION
from ._writer import MARKER, write_tree
from ._yaml import dump, dump_all

KUSTOMIZATION_HEADER = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
# Helm values keys, one per kind: a camelCase plural, e.g. `deployments`, `configMaps`.
VALUES_KEYS = {
    kind: kind[0].lower() + kind[1:] + ("es" if kind.endswith("s") else "s") for kind in KIND_ORDER
}


@dataclass(frozen=True)
class EnvironmentOutput:
    """What was rendered for one environment and where in the output it lives."""

    environment: str
    namespace: str
    location: str
    counts: dict[str, int]
    skipped: tuple[SkippedService, ...] = ()


@dataclass(frozen=True)
class Rendered:
    """An output held in memory: its files (relative path -> text) and what they contain."""

    files: dict[str, str]
    environments: tuple[EnvironmentOutput, ...]
    base_environment: str | None = None


@dataclass(frozen=True)
class Written:
    """An output written to disk."""

    directory: Path
    files: int
    environments: tuple[EnvironmentOutput, ...]
    base_environment: str | None = field(default=None)


def file_name(obj: Object) -> str:
    """`<kind>-<name>.yaml`: unique per object of one namespace (names are unique per kind)."""
    return f"{str(obj['kind']).lower()}-{obj['metadata']['name']}.yaml"


def all_manifests(
    spec: Spec,
    environments: Iterable[str] | None = None,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    argo: bool = False,
) -> list[Manifests]:
    """Validated manifests of the given environments (default: all, in the spec's order)."""
    names = list(spec.environments if environments is None else environments)
    return [build_manifests(spec.stack(name), kube_version=kube_version, argo=argo) for name in names]


def _summary(manifests: Manifests, location: str) -> EnvironmentOutput:
    return EnvironmentOutput(
        environment=manifests.environment,
        namespace=manifests.namespace,
        location=location,
        counts=manifests.counts(),
        skipped=manifests.skipped,
    )


def _write(rendered: Rendered, out_dir: str | Path) -> Written:
    directory = write_tree(rendered.files, out_dir)
    return Written(directory, len(rendered.files), rendered.environments, rendered.base_environment)


# --- plain manifests --------------------------------------------------------------------------


def kubernetes_tree(manifests: Sequence[Manifests], *, per_environment: bool) -> Rendered:
    """One file per object; under `<env>/` for each environment when `per_environment`."""
    files: dict[str, str] = {}
    outputs = []
    for each in manifests:
        prefix = f"{each.environment}/" if per_environment else ""
        for obj in each.objects:
            files[prefix + file_name(obj)] = dump(obj)
        outputs.append(_summary(each, prefix or "."))
    return Rendered(files, tuple(outputs))


def write_kubernetes(
    spec: Spec,
    out_dir: str | Path,
    environment: str | None = None,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    argo: bool = False,
) -> Written:
    """Write one file per object: of `environment` into `out_dir`, or of every one under `<env>/`."""
    environments = None if environment is None else [environment]
    manifests = all_manifests(spec, environments, kube_version=kube_version, argo=argo)
    return _write(kubernetes_tree(manifests, per_environment=environment is None), out_dir)


# --- Kustomize --------------------------------------------------------------------------------


def _identity(obj: Object) -> tuple[str, str, str]:
    # The Namespace is the one object whose name differs by environment: it is matched by kind.
    name = "" if obj["kind"] == "Namespace" else str(obj["metadata"]["name"])
    return (str(obj["apiVersion"]), str(obj["kind"]), name)


def _in_namespace(obj: Object, namespace: str) -> Object:
    """`obj` as it would be in `namespace`: what Kustomize's `namespace:` does to it."""
    moved = {**obj, "metadata": dict(obj["metadata"])}
    key = "name" if obj["kind"] == "Namespace" else "namespace"
    moved["metadata"][key] = namespace
    return moved


def _target(obj: Object) -> dict[str, str]:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    target = {"version": version, "kind": str(obj["kind"]), "name": str(obj["metadata"]["name"])}
    if group:
        target["group"] = group
    return target


def _base_environment(spec: Spec, base_environment: str | None) -> str:
    chosen = base_environment or spec.environments[-1]
    spec.stack(chosen)  # an unknown name raises UnknownEnvironmentError
    return chosen


def kustomize_tree(
    spec: Spec,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    base_environment: str | None = None,
    argo: bool = False,
) -> Rendered:
    """A base (one environment's objects) and `overlays/<env>/` for every environment.

    An overlay sets its namespace with Kustomize's `namespace:` (which also renames the
    Namespace object), patches what differs with RFC 6902 operations, deletes what the
    environment does not have and adds what only it has.
    """
    base_name = _base_environment(spec, base_environment)
    manifests = all_manifests(spec, kube_version=kube_version, argo=argo)
    base = next(m for m in manifests if m.environment == base_name)
    files: dict[str, str] = {}
    base_files = []
    for obj in base.objects:
        files[f"base/{file_name(obj)}"] = dump(obj)
        base_files.append(file_name(obj))
    files["base/kustomization.yaml"] = dump({**KUSTOMIZATION_HEADER, "resources": base_files})
    base_objects = {_identity(obj): obj for obj in base.objects}
    outputs = []
    for each in manifests:
        folder = f"overlays/{each.environment}"
        resources = ["../../base"]
        patches: list[dict[str, Any]] = []
        wanted = {_identity(obj): obj for obj in each.objects}
        for identity, obj in sorted(base_objects.items(), key=lambda item: object_key(item[1])):
            if identity in wanted:
                ops = json_patch(obj, _in_namespace(wanted[identity], base.namespace))
                if not ops:
                    continue
                path = f"patches/{file_name(obj)}"
                files[f"{folder}/{path}"] = dump(ops)
            else:
                path = f"patches/delete-{file_name(obj)}"
                deletion = {
                    "$patch": "delete",
                    "apiVersion": obj["apiVersion"],
                    "kind": obj["kind"],
                    "metadata": {"name": obj["metadata"]["name"]},
                }
                files[f"{folder}/{path}"] = dump(deletion)
            patches.append({"path": path, "target": _target(obj)})
        for identity, obj in sorted(wanted.items(), key=lambda item: object_key(item[1])):
            if identity not in base_objects:
                path = f"resources/{file_name(obj)}"
                files[f"{folder}/{path}"] = dump(obj)
                resources.append(path)
        kustomization: dict[str, Any] = {
            **KUSTOMIZATION_HEADER,
            "namespace": each.namespace,
            "resources": resources,
        }
        if patches:
            kustomization["patches"] = patches
        files[f"{folder}/kustomization.yaml"] = dump(kustomization)
        outputs.append(_summary(each, folder))
    return Rendered(files, tuple(outputs), base_name)


def render_kustomize(
    spec: Spec,
    out_dir: str | Path,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    base_environment: str | None = None,
) -> Written:
    """Write the Kustomize tree (`base/`, `overlays/<env>/`) into `out_dir`, atomically."""
    rendered = kustomize_tree(spec, kube_version=kube_version, base_environment=base_environment)
    return _write(rendered, out_dir)


# --- Helm -------------------------------------------------------------------------------------


def _values(objects: Iterable[Object]) -> dict[str, dict[str, Object]]:
    values: dict[str, dict[str, Object]] = {}
    for obj in objects:
        key = VALUES_KEYS.get(str(obj["kind"]))
        if key is None:  # pragma: no cover - every kind rendered is in KIND_ORDER
            raise RenderError(f"{obj['kind']} has no place in the Helm chart's values")
        values.setdefault(key, {})[str(obj["metadata"]["name"])] = obj
    return values


_TEMPLATE = """\
{{{{- /* Every {kind} of the stack, as rendered by shipyard: the objects are values, so
values-<environment>.yaml changes them as data and this chart cannot drift from
`shipyard render kubernetes`. */}}}}
{{{{- range $name, $object := .Values.{key} }}}}
---
{{{{ toYaml $object }}}}
{{{{- end }}}}
"""

# The per-service knobs a Helm user expects (`--set shipyard.services.web.image.tag=1.4.2`,
# `…replicaCount=4`), under a key no kind's values key can take. The templates of the kinds that
# run a service's pods write them into the objects; by default they hold what the objects
# already say, so the chart renders the very objects `render kubernetes` does.
SERVICE_VALUES_KEY = "shipyard"
_POD_KINDS = ("StatefulSet", "Deployment", "Rollout", "CronJob")
_REPLICA_KINDS = ("StatefulSet", "Deployment", "Rollout")
_HELPERS = """\
{{- /* shipyard.serviceValues: write .Values.shipyard.services.<service> (image, replicaCount)
into a workload of that service, found by its pod template's app.kubernetes.io/name label. Only
containers running the service's image repository are changed (a sidecar keeps its own image);
replicaCount only where the workload is the service's own and has no autoscaler (no replicas). */}}
{{- define "shipyard.serviceValues" -}}
{{- $object := .object -}}
{{- $template := dict -}}
{{- if eq $object.kind "CronJob" -}}
{{- $template = $object.spec.jobTemplate.spec.template -}}
{{- else -}}
{{- $template = $object.spec.template -}}
{{- end -}}
{{- $labels := (($template.metadata | default dict).labels | default dict) -}}
{{- $service := get $labels "app.kubernetes.io/name" | default "" -}}
{{- $services := ((.values.shipyard | default dict).services | default dict) -}}
{{- $values := get $services $service | default dict -}}
{{- if and (hasKey $values "replicaCount") (ne $object.kind "CronJob") (eq $object.metadata.name $service) -}}
{{- $_ := set $object.spec "replicas" $values.replicaCount -}}
{{- end -}}
{{- if $values.image -}}
{{- $repository := $values.image.repository -}}
{{- $image := $repository -}}
{{- if $values.image.tag -}}{{- $image = printf "%s:%s" $image (toString $values.image.tag) -}}{{- end -}}
{{- if $values.image.digest -}}{{- $image = printf "%s@%s" $image $values.image.digest -}}{{- end -}}
{{- $pod := $template.spec -}}
{{- range $containers := list ($pod.containers | default list) ($pod.initContainers | default list) -}}
{{- range $container := $containers -}}
{{- $current := toString $container.image -}}
{{- $tagged := hasPrefix (printf "%s:" $repository) $current -}}
{{- $pinned := hasPrefix (printf "%s@" $repository) $current -}}
{{- if or (eq $current $repository) $tagged $pinned -}}
{{- $_ := set $container "image" $image -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
"""

_POD_TEMPLATE = """\
{{{{- /* Every {kind} of the stack, as rendered by shipyard: the objects are values, so
values-<environment>.yaml changes them as data and this chart cannot drift from
`shipyard render kubernetes`; .Values.shipyard.services sets a service's image and replicas. */}}}}
{{{{- range $name, $object := .Values.{key} }}}}
{{{{- $_ := include "shipyard.serviceValues" (dict "object" $object "values" $.Values) }}}}
---
{{{{ toYaml $object }}}}
{{{{- end }}}}
"""


def split_image(image: str) -> dict[str, str]:
    """An image reference as Helm values: `repository`, and `tag` and `digest` when it has them."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    values = {"repository": name}
    if ":" in last:  # a tag, not a registry's port (which is before a '/')
        values["repository"] = name[: len(name) - len(last)] + last.split(":", 1)[0]
        values["tag"] = last.split(":", 1)[1]
    if digest:
        values["digest"] = digest
    return values


def _service_values(spec: Spec, manifests: Manifests) -> dict[str, Any]:
    """`shipyard.services.<name>`: each rendered service's image, and `replicaCount` where its
    own workload sets `replicas` (an autoscaled one leaves them to its HPA)."""
    stack = spec.stack(manifests.environment)
    replicas = {
        str(obj["metadata"]["name"]): obj["spec"]["replicas"]
        for obj in manifests.objects
        if obj["kind"] in _REPLICA_KINDS and "replicas" in obj["spec"]
    }
    services: dict[str, Any] = {}
    for name, service in sorted(stack.services.items()):
        if service.image is None:
            continue  # no Kubernetes form: nothing rendered to set
        entry: dict[str, Any] = {"image": split_image(service.image)}
        if name in replicas:
            entry["replicaCount"] = replicas[name]
        services[name] = entry
    return {SERVICE_VALUES_KEY: {"services": services}} if services else {}


def helm_tree(
    spec: Spec,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    base_environment: str | None = None,
    argo: bool = False,
) -> Rendered:
    """A chart whose values.yaml holds one environment's objects by kind and name, one template
    per kind that writes them out, and `values-<env>.yaml` with each environment's difference."""
    base_name = _base_environment(spec, base_environment)
    manifests = all_manifests(spec, kube_version=kube_version, argo=argo)
    base = next(m for m in manifests if m.environment == base_name)
    stack = spec.stack(base_name)
    base_values: dict[str, Any] = {**_values(base.objects), **_service_values(spec, base)}
    files = {
        "Chart.yaml": dump(
            {
                "apiVersion": "v2",
                "name": stack.name,
                "description": f"The {stack.name} stack, rendered by shipyard from {Path(spec.file).name}.",
                "type": "application",
                # SemVer, as Helm requires; the spec's `version` (of the base environment).
                "version": stack.version,
                "appVersion": stack.version,
            }
        ),
        ".helmignore": f"{MARKER}\n",
        "values.yaml": f"# The objects of environment {base_name!r}, by kind and name.\n" + dump(base_values),
    }
    for kind in KIND_ORDER:
        key = VALUES_KEYS[kind]
        template = _POD_TEMPLATE if kind in _POD_KINDS else _TEMPLATE
        files[f"templates/{key}.yaml"] = template.format(kind=kind, key=key)
    files["templates/_helpers.tpl"] = _HELPERS
    outputs = []
    for each in manifests:
        try:
            patch = values_patch(base_values, {**_values(each.objects), **_service_values(spec, each)})
        except ValueError as exc:  # pragma: no cover - no renderer changes a field's type
            raise RenderError(f"environment {each.environment}: {exc}") from None
        header = f"# Environment {each.environment!r}: merged onto values.yaml (`helm -f`).\n"
        files[f"values-{each.environment}.yaml"] = header + dump(patch)
        outputs.append(_summary(each, f"values-{each.environment}.yaml"))
    return Rendered(files, tuple(outputs), base_name)


def render_helm(
    spec: Spec,
    out_dir: str | Path,
    *,
    kube_version: str = DEFAULT_KUBE_VERSION,
    base_environment: str | None = None,
) -> Written:
    """Write the Helm chart into `out_dir`, atomically."""
    return _write(helm_tree(spec, kube_version=kube_version, base_environment=base_environment), out_dir)


def manifests_text(manifests: Sequence[Manifests]) -> str:
    """Every environment's objects as one multi-document YAML stream."""
    return "".join(dump_all(each.objects) for each in manifests)
