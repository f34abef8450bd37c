"""Rendering: the spec as Kubernetes manifests, a Kustomize tree and a Helm chart.

Everything here is pure until a `write`/`render_*` function writes its output (atomically, into a
directory it owns). Objects are checked against Kubernetes' strict JSON schemas before anything
is written, and the Kustomize and Helm outputs are derived from the very objects
`render_kubernetes` returns, so they cannot say something else.
"""

from ._kubernetes import (
    KIND_ORDER,
    Manifests,
    SkippedService,
    build_manifests,
    render_kubernetes,
)
from ._outputs import (
    EnvironmentOutput,
    Rendered,
    Written,
    all_manifests,
    file_name,
    helm_tree,
    kubernetes_tree,
    kustomize_tree,
    manifests_text,
    render_helm,
    render_kustomize,
    write_kubernetes,
)
from ._schema import DEFAULT_KUBE_VERSION, supported_versions, validate_objects
from ._writer import write_tree
from ._yaml import dump, dump_all

__all__ = [
    "DEFAULT_KUBE_VERSION",
    "KIND_ORDER",
    "EnvironmentOutput",
    "Manifests",
    "Rendered",
    "SkippedService",
    "Written",
    "all_manifests",
    "build_manifests",
    "dump",
    "dump_all",
    "file_name",
    "helm_tree",
    "kubernetes_tree",
    "kustomize_tree",
    "manifests_text",
    "render_helm",
    "render_kubernetes",
    "render_kustomize",
    "supported_versions",
    "validate_objects",
    "write_kubernetes",
    "write_tree",
]
