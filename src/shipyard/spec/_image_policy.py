"""The image policy (`images:`), and what a Dockerfile's `USER` means to the kubelet.

`validate` refuses, in the policy's environments (production by default), an image the spec
names without a digest, or with a tag that moves (`latest`, or none, which means `latest`): what
runs there must be exactly what was built, scanned and signed. Each problem names the field, so
the loader points at its line.

`dockerfile_user` reads a Dockerfile's final stage for its `USER`: `runAsNonRoot` (always on in
what shipyard renders) refuses a container whose user is root, and one whose user is a name, which
the kubelet cannot tell is not root. Both are pure: text in, findings out (`shipyard check images`
runs hadolint beside them, in ops/_images.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ._model import Stack, default_shipyard_image

Problem = tuple[tuple[str | int, ...], str]

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as registries read it: `repository[:tag][@digest]`."""

    repository: str
    """With its registry host (and port) when it has one: `registry.example.com:5000/app`."""
    tag: str | None
    digest: str | None

    @property
    def registry(self) -> str:
        """The registry host the repository lives on (`docker.io` when it names none)."""
        first, slash, _ = self.repository.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            return first
        return "docker.io"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


def parse_image(image: str) -> ImageRef:
    """`image` split into repository, tag and digest (a registry's port is not a tag)."""
    name, at, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag: str | None = None
    if ":" in last:
        tag = last.split(":", 1)[1]
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return ImageRef(repository=name, tag=tag, digest=digest if at else None)


def image_policy_problems(stack: Stack) -> Iterator[Problem]:
    """The images of `stack` its environment's policy refuses, and `build:` without an image."""
    for name, service in stack.services.items():
        if service.build is not None and service.image is None:
            yield (
                ("services", name, "build"),
                "build: needs image: the repository CI pushes the build to (e.g. image:"
                f" registry.example.com/{name}:1.0.0)",
            )
    policy = stack.images
    if stack.environment not in policy.environments:
        return
    named: list[tuple[tuple[str | int, ...], str]] = [
        (("services", n, "image"), s.image) for n, s in stack.services.items() if s.image
    ]
    for name, store in stack.datastores.items():
        if store.image:
            named.append((("datastores", name, "image"), store.image))
        if store.exporter is not None and store.exporter.image:
            named.append((("datastores", name, "exporter", "image"), store.exporter.image))
    # shipyard's own image, where the spec names another than its default (this shipyard's
    # release tag, which a stack dumped and loaded back names too).
    for section, part in (("backup", stack.backup), ("control_plane", stack.control_plane)):
        if part is not None and part.image != default_shipyard_image():
            named.append(((section, "image"), part.image))
    for path, image in named:
        problem = _refused(image, stack.environment, policy.require_digest, policy.mutable_tags)
        if problem:
            yield path, problem


def _refused(image: str, environment: str, require_digest: bool, mutable: list[str]) -> str | None:
    ref = parse_image(image)
    relax = f"or set images.require_digest: false in environments.{environment}"
    if ref.digest is not None and not DIGEST.fullmatch(ref.digest):
        return (
            f"{image!r}: {ref.digest!r} is not a digest; write @sha256: and its 64 lower-case hex"
            " digits, as `docker buildx imagetools inspect IMAGE` prints them"
        )
    if ref.tag is not None and not _TAG.fullmatch(ref.tag):
        return f"{image!r}: {ref.tag!r} is not an image tag (letters, digits, '_', '.', '-'; at most 128)"
    moving = (ref.tag or "latest") if (ref.tag or "latest") in mutable else None
    if moving is not None and ref.digest is None:
        said = f"tag {moving!r}" if ref.tag else "no tag, which means 'latest',"
        return (
            f"{image!r} has {said} and moves with every push: {environment} runs exactly what was"
            f" built and scanned; pin it by digest ({ref.repository}@sha256:…) or a release tag"
            f" and digest ({ref.repository}:1.2.3@sha256:…)"
        )
    if require_digest and ref.digest is None:
        return (
            f"{image!r} has no digest: a tag can be pushed again, so {environment} runs images by"
            f" digest; write it as {image}@sha256:… (the digest CI's build pushed, or `docker buildx"
            f" imagetools inspect {image}`), {relax}"
        )
    return None


UserProblem = Literal["root", "non-numeric", "none"]


@dataclass(frozen=True)
class DockerfileUser:
    """The user the image of a Dockerfile runs as: the final stage's last `USER`."""

    user: str | None
    """As written (`10001:10001`, `node`), variables resolved where the stage gives them; None: no USER."""
    line: int
    """The line of that USER (of the final FROM when there is none); 1-based."""
    problem: UserProblem | None
    """root: uid 0 or `root`; non-numeric: a name the kubelet cannot check; none: no USER at all."""

    def message(self, run_as_user: int | None = None) -> str:
        """Why `runAsNonRoot` refuses the image (and what to do), or why it passes."""
        if self.problem == "root":
            return f"USER {self.user} runs as root, which runAsNonRoot refuses: add a user and USER <uid>"
        if self.problem is None:
            return f"USER {self.user} is numeric: runAsNonRoot can check it"
        what = (
            f"USER {self.user} is a name: the kubelet cannot tell it is not root and refuses it under"
            " runAsNonRoot"
            if self.problem == "non-numeric"
            else "no USER: the image runs as its base image's user (root unless the base sets one)"
        )
        if run_as_user is not None:
            return f"{what}; the spec's run_as_user: {run_as_user} gives the pods a uid instead"
        return f"{what}; write USER <uid>:<gid> (e.g. USER 10001:10001), or give the service run_as_user"


_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def dockerfile_instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) of each instruction: comments dropped, `\\` continuations
    joined (the `# escape=` parser directive honoured), the line where each instruction starts."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:
        directive = re.match(r"^#\s*escape\s*=\s*(\S)\s*$", raw)
        if directive:
            escape = directive.group(1)
            continue
        if raw.strip() and not raw.lstrip().startswith("#"):
            break  # parser directives come before anything else
    start, parts = 0, list[str]()
    for number, raw in enumerate(lines, start=1):
        if not parts and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if parts and raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not parts:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith(escape):
            parts.append(stripped[: -len(escape)])
            continue
        parts.append(stripped)
        joined = " ".join(part.strip() for part in parts)
        parts = []
        match = _INSTRUCTION.match(joined)
        if match:
            yield start, match.group(1).upper(), (match.group(2) or "").strip()
    if parts:
        match = _INSTRUCTION.match(" ".join(part.strip() for part in parts))
        if match:
            yield start, match.group(1).upper(), (match.group(2) or "").strip()


def dockerfile_user(text: str) -> DockerfileUser:
    """The final stage's user, judged as `runAsNonRoot` would (see DockerfileUser)."""
    user: str | None = None
    line = 0
    values: dict[str, str] = {}
    global_args: dict[str, str] = {}
    in_stage = False
    for number, instruction, arguments in dockerfile_instructions(text):
        if instruction == "FROM":
            user, line, in_stage, values = None, number, True, {}
        elif instruction in ("ARG", "ENV"):
            for name, value in _assignments(arguments):
                if not in_stage:  # an ARG before the first FROM: a default a stage may import
                    if value is not None:
                        global_args[name] = value
                elif value is not None:
                    values[name] = _substitute(value, values)
                elif name in global_args:  # `ARG NAME` in a stage takes the global default
                    values[name] = global_args[name]
        elif instruction == "USER" and arguments:
            user, line = _substitute(arguments.split()[0], values), number
    if user is None:
        return DockerfileUser(None, line, "none")
    name, _, _group = user.partition(":")
    if name in ("0", "root"):
        return DockerfileUser(user, line, "root")
    if not name.isdigit():
        return DockerfileUser(user, line, "non-numeric")
    return DockerfileUser(user, line, None)


def _assignments(arguments: str) -> Iterator[tuple[str, str | None]]:
    """`NAME=value …` (or the legacy `ENV NAME value`, `ARG NAME`) as (name, value or None)."""
    words = arguments.split()
    if len(words) >= 2 and "=" not in words[0]:
        yield words[0], " ".join(words[1:]).strip("\"'")  # ENV NAME value
        return
    for word in words:
        name, equals, value = word.partition("=")
        yield name, value.strip("\"'") if equals else None


def _substitute(value: str, values: dict[str, str]) -> str:
    """`$NAME` and `${NAME}` replaced by what the stage set them to; unknown ones left as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, value)
