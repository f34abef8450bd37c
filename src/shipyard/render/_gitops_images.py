"""Pin one image to a digest in a Kustomize overlay of the `render argocd` tree (`shipyard promote`).

A promotion on the GitOps path is a file change in a checkout of the GitOps repository: the
overlay's `kustomization.yaml` gets a Kustomize `images:` entry that names the image as the
manifests do (repository, no tag) and gives the digest that passed in the source environment,

    images:
    - name: registry.example.com/app
      digest: sha256:…

which `kubectl kustomize` applies to every container with that image in the overlay (the Argo
Rollout, its migration Job, CronJobs). `newName` is set when the image that passed lives in
another repository than the one the target environment's manifests name. Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import RenderError
from ._yaml import dump

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImagePin:
    """One `images:` entry: containers whose image is `name` (any tag) run `new_name@digest`."""

    name: str
    digest: str
    new_name: str | None = None

    def entry(self) -> dict[str, str]:
        entry = {"name": self.name, "digest": self.digest}
        if self.new_name is not None and self.new_name != self.name:
            entry["newName"] = self.new_name
        return entry


def _kustomization(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(
            f"{where}: not YAML ({exc}); render the tree again with `shipyard render argocd`"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != "Kustomization":
        raise RenderError(
            f"{where}: not a Kustomization; render the tree again with `shipyard render argocd`"
        )
    images = data.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
        raise RenderError(f"{where}: `images:` is not a list of entries; fix or remove it")
    return data


def pinned(text: str, name: str, where: str = "kustomization.yaml") -> ImagePin | None:
    """The overlay's pin of image `name`, if it has one with a digest."""
    return next((pin for pin in pins(text, where) if pin.name == name), None)


def pins(text: str, where: str = "kustomization.yaml") -> tuple[ImagePin, ...]:
    """Every pin of the overlay (`images:` entries that give a digest)."""
    return tuple(
        ImagePin(entry["name"], entry["digest"], entry.get("newName"))
        for entry in _kustomization(text, where).get("images", [])
        if isinstance(entry.get("name"), str) and isinstance(entry.get("digest"), str)
    )


def kept_pins(files: Mapping[str, str], previous: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """`files` (a new `render argocd` tree) with the pins that promotions wrote into the overlays of
    the `previous` tree (path -> text) applied again, and a note per pin kept.

    Rendering the tree again must not undo a promotion: an environment runs what was promoted into
    it until the next promotion, whatever tag the spec names meanwhile.
    """
    kept = dict(files)
    notes: list[str] = []
    for path in files:
        if "/overlays/" not in f"/{path}" or not path.endswith("kustomization.yaml") or path not in previous:
            continue
        for pin in pins(previous[path], path):
            kept[path] = pin_image(kept[path], pin, path)
            notes.append(f"{path}: kept the promoted pin {pin.name}@{pin.digest[:19]}…")
    return kept, notes


def pin_image(text: str, pin: ImagePin, where: str = "kustomization.yaml") -> str:
    """The overlay's text with `pin` as the only `images:` entry for its name (others kept)."""
    if not DIGEST.fullmatch(pin.digest):
        raise RenderError(f"{pin.digest!r} is not a sha256 digest (sha256: and 64 hex digits)")
    data = _kustomization(text, where)
    others = [entry for entry in data.get("images", []) if entry.get("name") != pin.name]
    data["images"] = sorted([*others, pin.entry()], key=lambda entry: str(entry.get("name")))
    return dump(data)
