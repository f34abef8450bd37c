"""The image policy (`images:`) as `validate` applies it, and a Dockerfile's USER as the kubelet
reads it under runAsNonRoot (spec/_image_policy.py): pure, so every case is exercised here."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import SpecError
from shipyard.spec import dockerfile_user, load_spec_text, parse_image

DIGEST = "sha256:" + "ab" * 32


def _spec(image: str, overlay: str = "{}", policy: str = "") -> str:
    return textwrap.dedent(
        f"""\
        name: shop
        services:
          web:
            role: web
            image: {image}
            port: 80
        {policy}
        environments:
          staging: {{}}
          production: {overlay}
        """
    )


def _issues(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "s.yaml")
    return [f"{i.file}:{i.line}:{i.column}: {i.path}: {i.message}" for i in caught.value.issues]


@pytest.mark.parametrize(
    ("image", "repository", "tag", "digest", "registry"),
    [
        ("web", "web", None, None, "docker.io"),
        ("shop/web:1.2.3", "shop/web", "1.2.3", None, "docker.io"),
        (
            "registry.example.com:5000/shop/web",
            "registry.example.com:5000/shop/web",
            None,
            None,
            "registry.example.com:5000",
        ),
        (f"ghcr.io/acme/web:1.0@{DIGEST}", "ghcr.io/acme/web", "1.0", DIGEST, "ghcr.io"),
        (f"localhost/web@{DIGEST}", "localhost/web", None, DIGEST, "localhost"),
    ],
)
def test_an_image_splits_as_registries_read_it(
    image: str, repository: str, tag: str | None, digest: str | None, registry: str
) -> None:
    ref = parse_image(image)
    assert (ref.repository, ref.tag, ref.digest, ref.registry) == (repository, tag, digest, registry)
    assert str(ref) == image


@given(
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,5}(:[0-9]{2,5})?/)?[a-z][a-z0-9]{0,8}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    st.one_of(st.none(), st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)),
)
def test_parsing_gives_back_what_was_joined(name: str, tag: str | None, digest: str | None) -> None:
    image = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_image(image)
    assert (ref.repository, ref.tag, ref.digest) == (name, tag, digest)


def test_production_refuses_an_image_without_a_digest_naming_line_and_fix() -> None:
    (issue,) = _issues(_spec("shop/web:1.2.3"))
    assert issue.startswith("s.yaml:5:5: services.web.image: 'shop/web:1.2.3' has no digest")
    assert "shop/web:1.2.3@sha256:" in issue
    assert "images.require_digest: false in environments.production" in issue


@pytest.mark.parametrize("image", ["shop/web", "shop/web:latest", "shop/web:main"])
def test_production_refuses_a_moving_tag_even_with_no_digest_rule(image: str) -> None:
    (issue,) = _issues(_spec(image, policy="images: {require_digest: false}"))
    assert "moves with every push" in issue
    assert issue.startswith("s.yaml:5:5: services.web.image")
    assert "require_digest" not in issue  # that switch does not let a moving tag through


def test_a_digest_pin_passes_with_a_moving_tag_name_beside_it() -> None:
    load_spec_text(_spec(f"shop/web:latest@{DIGEST}"), "s.yaml")


def test_a_malformed_digest_is_named() -> None:
    (issue,) = _issues(_spec("shop/web:1.0@sha256:abc"))
    assert "'sha256:abc' is not a digest" in issue


def test_the_digest_given_in_the_production_overlay_is_what_counts() -> None:
    spec = load_spec_text(
        _spec("shop/web:1.2.3", overlay=f"{{services: {{web: {{image: 'shop/web:1.2.3@{DIGEST}'}}}}}}")
    )
    assert spec.stack("production").services["web"].image == f"shop/web:1.2.3@{DIGEST}"
    assert spec.stack("staging").services["web"].image == "shop/web:1.2.3"  # not production: free


def test_an_overlay_may_relax_the_policy_and_another_environment_may_opt_in() -> None:
    load_spec_text(_spec("shop/web:1.2.3", overlay="{images: {require_digest: false}}"))
    policy = "images: {environments: [staging, production]}"
    issues = _issues(
        _spec(
            "shop/web:1.2.3", overlay=f"{{services: {{web: {{image: 'shop/web@{DIGEST}'}}}}}}", policy=policy
        )
    )
    assert len(issues) == 1
    assert "staging runs images by digest" in issues[0]


def test_datastore_and_exporter_images_are_held_to_it_too() -> None:
    text = _spec(f"shop/web@{DIGEST}") + textwrap.dedent(
        """\
        datastores:
          db: {kind: postgresql, image: postgres:15, storage: {size: 1Gi}, exporter: {image: exp:latest}}
        """
    )
    issues = _issues(text)
    assert [i.split(": ")[1] for i in issues] == ["datastores.db.image", "datastores.db.exporter.image"]


def test_shipyards_own_image_is_held_to_it_where_the_spec_names_one() -> None:
    base = (
        _spec(f"shop/web@{DIGEST}") + "backup: {repository: s3:https://s3.example.com/b, password: '${env:P}'"
    )
    named = base + ", image: myreg/shipyard:2.0}\ncontrol_plane: {image: myreg/shipyard:2.0}\n"
    issues = _issues(named)
    assert [i.split(": ")[1] for i in issues] == ["backup.image", "control_plane.image"]
    assert all("has no digest" in i for i in issues)
    # its default (this shipyard's release tag) is not named by the spec: not checked
    load_spec_text(base + "}\ncontrol_plane: {}\n", "s.yaml")


def test_a_build_needs_an_image_to_push_to() -> None:
    text = _spec(f"shop/web@{DIGEST}").replace(
        "    port: 80\n", "    port: 80\n  worker: {role: worker, run: ./work, build: {test: make test}}\n"
    )
    issues = _issues(text)
    assert issues
    assert all("services.worker.build: build: needs image" in i for i in issues)
    assert issues[0].startswith("s.yaml:7:")


def test_a_build_path_cannot_leave_the_spec_directory() -> None:
    text = _spec(f"shop/web@{DIGEST}").replace(
        "    port: 80\n", "    port: 80\n    build: {context: ../elsewhere, test: make}\n"
    )
    (issue,) = _issues(text)
    assert "services.web.build.context" in issue
    assert "without .." in issue


# --- USER -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "user", "problem", "line"),
    [
        ("FROM node:20\nUSER root\n", "root", "root", 2),
        ("FROM node:20\nUSER 0:0\n", "0:0", "root", 2),
        ("FROM node:20\nUSER node\n", "node", "non-numeric", 2),
        ("FROM node:20\nUSER 10001\n", "10001", None, 2),
        ("FROM node:20\nUSER 10001:10001\n", "10001:10001", None, 2),
        ("FROM node:20\nRUN true\n", None, "none", 1),
        # The final stage is what runs: an earlier stage's USER does not count.
        ("FROM node:20 AS build\nUSER 1000\nFROM node:20-slim\nCOPY --from=build /a /a\n", None, "none", 3),
        ("FROM a AS build\nUSER root\nFROM b\nUSER 1001\n", "1001", None, 4),
        # Variables the stage sets are resolved; a global ARG only once the stage imports it.
        ("FROM a\nARG UID=10001\nUSER ${UID}\n", "10001", None, 3),
        ("ARG UID=10001\nFROM a\nARG UID\nUSER $UID\n", "10001", None, 4),
        ("ARG UID=10001\nFROM a\nUSER $UID\n", "$UID", "non-numeric", 3),
        ("FROM a\nENV APP_USER nextjs\nUSER $APP_USER\n", "nextjs", "non-numeric", 3),
        # Case, comments and continuations as Docker reads them.
        ("from a\n# USER root\nuser \\\n  1001\n", "1001", None, 3),
        ("# escape=`\nFROM a\nRUN echo `\n  hi\nUSER app\n", "app", "non-numeric", 5),
    ],
)
def test_the_final_user_is_read_as_the_kubelet_would(
    dockerfile: str, user: str | None, problem: str | None, line: int
) -> None:
    found = dockerfile_user(dockerfile)
    assert (found.user, found.problem, found.line) == (user, problem, line)


def test_each_user_message_says_what_to_do() -> None:
    assert "runAsNonRoot refuses" in dockerfile_user("FROM a\nUSER root\n").message()
    named = dockerfile_user("FROM a\nUSER node\n")
    assert "USER <uid>:<gid>" in named.message()
    assert "run_as_user" in named.message()
    assert "run_as_user: 1000 gives the pods a uid" in named.message(1000)
    assert "base image's user" in dockerfile_user("FROM a\n").message()
