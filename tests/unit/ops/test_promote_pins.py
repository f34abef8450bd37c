"""The Kustomize `images:` pin a GitOps promotion writes (`render._gitops_images`): pure text in, text
out, for any overlay `render argocd` writes and any image name and digest."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import RenderError
from shipyard.render import ImagePin, pin_image, pinned

OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: production
resources:
- ../../base
"""

digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
segments = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", fullmatch=True)
names = st.builds(
    lambda host, path: f"{host}/{'/'.join(path)}",
    st.sampled_from(["registry.example.com", "ghcr.io", "localhost:5000"]),
    st.lists(segments, min_size=1, max_size=3),
)


@given(name=names, digest=digests, other=names, other_digest=digests)
def test_a_pin_is_read_back_and_keeps_every_other_entry(
    name: str, digest: str, other: str, other_digest: str
) -> None:
    with_other = pin_image(OVERLAY, ImagePin(other, other_digest))
    text = pin_image(with_other, ImagePin(name, digest))
    assert pinned(text, name) == ImagePin(name, digest)
    data = yaml.safe_load(text)
    assert data["resources"] == ["../../base"]
    assert data["namespace"] == "production"
    if other != name:
        assert pinned(text, other) == ImagePin(other, other_digest)
    assert [entry["name"] for entry in data["images"]].count(name) == 1


@given(name=names, first=digests, second=digests)
def test_pinning_again_replaces_the_entry_and_is_idempotent(name: str, first: str, second: str) -> None:
    once = pin_image(pin_image(OVERLAY, ImagePin(name, first)), ImagePin(name, second))
    assert pinned(once, name) == ImagePin(name, second)
    assert pin_image(once, ImagePin(name, second)) == once
    assert len(yaml.safe_load(once)["images"]) == 1


def test_new_name_only_when_the_repository_differs() -> None:
    digest = "sha256:" + "a" * 64
    same = ImagePin("ghcr.io/acme/web", digest, "ghcr.io/acme/web").entry()
    moved = ImagePin("ghcr.io/acme/web", digest, "registry.example.com/acme/web").entry()
    assert same == {"name": "ghcr.io/acme/web", "digest": digest}
    assert moved == {"name": "ghcr.io/acme/web", "digest": digest, "newName": "registry.example.com/acme/web"}


def test_an_overlay_without_the_pin_reads_none() -> None:
    assert pinned(OVERLAY, "ghcr.io/acme/web") is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("kind: [", "not YAML"),
        ("kind: Deployment\n", "not a Kustomization"),
        (OVERLAY + "images: {name: x}\n", "not a list of entries"),
    ],
)
def test_an_overlay_that_is_not_one_is_refused_by_name(text: str, said: str) -> None:
    with pytest.raises(RenderError, match=said) as raised:
        pin_image(text, ImagePin("ghcr.io/acme/web", "sha256:" + "b" * 64), "prod/kustomization.yaml")
    assert raised.value.message.startswith("prod/kustomization.yaml: ")


@pytest.mark.parametrize("digest", ["latest", "sha256:abc", "sha512:" + "c" * 64, "sha256:" + "C" * 64])
def test_only_a_sha256_digest_is_written(digest: str) -> None:
    with pytest.raises(RenderError, match="not a sha256 digest"):
        pin_image(OVERLAY, ImagePin("ghcr.io/acme/web", digest))
