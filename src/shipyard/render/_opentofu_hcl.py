"""A small HCL writer for `render opentofu`: blocks, attributes and expressions as text.

Output is deterministic: blocks come in the order they are given, attributes in the order their
body lists them, and every map (tags, labels) is written with its keys sorted. Strings are
escaped as HCL reads them (`\\`, `"`, newlines, and `${`/`%{`, which would start a template), so
a literal never turns into an expression; an `Expr` is written as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Expr:
    """An HCL expression written verbatim: a reference, a function call, a template string."""

    text: str


Value = str | int | bool | None | Expr | Sequence["Value"] | Mapping[str, "Value"]
"""An attribute's value: a literal (str, int, bool, null), an expression, a list or an object."""


@dataclass(frozen=True)
class Nested:
    """A nested block (`vpc_config { … }`); a list of them repeats the block."""

    body: Body
    labels: tuple[str, ...] = ()


Body = Mapping[str, Value | Nested | Sequence[Nested]]


@dataclass(frozen=True)
class Block:
    """A top-level block: `resource "aws_vpc" "main" { … }`, with an optional comment above it."""

    kind: str
    labels: tuple[str, ...]
    body: Body = field(default_factory=dict)
    comment: str | None = None

    @property
    def address(self) -> str:
        """How other blocks refer to it: `aws_vpc.main`, `data.aws_region.current`, `var.x`."""
        if self.kind == "resource":
            return ".".join(self.labels)
        if self.kind == "data":
            return "data." + ".".join(self.labels)
        if self.kind == "variable":
            return f"var.{self.labels[0]}"
        return ".".join((self.kind, *self.labels))


def resource(kind: str, name: str, body: Body, comment: str | None = None) -> Block:
    return Block("resource", (kind, name), body, comment)


def data(kind: str, name: str, body: Body, comment: str | None = None) -> Block:
    return Block("data", (kind, name), body, comment)


def variable(
    name: str, kind: str, description: str, *, sensitive: bool = False, default: Value | Expr = None
) -> Block:
    body: dict[str, Value | Nested] = {"type": Expr(kind), "description": description}
    if default is not None:
        body["default"] = default
    if sensitive:
        body["sensitive"] = True
    return Block("variable", (name,), body)


def output(name: str, value: Expr, description: str, *, sensitive: bool = False) -> Block:
    body: dict[str, Value | Nested] = {"description": description, "value": value}
    if sensitive:
        body["sensitive"] = True
    return Block("output", (name,), body)


def ref(*parts: str) -> Expr:
    """A reference: ref("aws_vpc.main", "id") is `aws_vpc.main.id`."""
    return Expr(".".join(parts))


def template(text: str) -> Expr:
    """A template string whose `${…}` are interpolations (quotes and backslashes escaped)."""
    return Expr('"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"')


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def identifier(text: str) -> str:
    """A name usable as a block label and in references: `api-gateway` is `api_gateway`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if re.match(r"^[A-Za-z_]", name) else f"_{name}"


def string(text: str) -> str:
    """A quoted HCL string literal of `text`, nothing in it interpolated."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    # A literal `${` or `%{` would start a template: its brace is written `\u007b`, which OpenTofu
    # reads as `{` after it has looked for templates. HCL's own `$${`/`%%{` escapes mean the same,
    # but python-hcl2 (the tests' parser) cannot read them everywhere.
    return '"' + escaped.replace("${", "$\\u007b").replace("%{", "%\\u007b") + '"'


def _key(name: str) -> str:
    return name if _IDENTIFIER.match(name) else string(name)


def _value(value: Value, indent: int) -> str:
    pad = "  " * indent
    if isinstance(value, Expr):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        lines = [f"{pad}  {_key(key)} = {_value(value[key], indent + 1)}" for key in sorted(value)]
        return "{\n" + "\n".join(lines) + f"\n{pad}}}"
    items = [_value(item, indent + 1) for item in value]
    if not items:
        return "[]"
    inline = "[" + ", ".join(items) + "]"
    if len(inline) <= 80 and "\n" not in inline:
        return inline
    return "[\n" + ",\n".join(f"{pad}  {item}" for item in items) + f",\n{pad}]"


def _body(body: Body, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    width = max((len(key) for key, item in body.items() if not _is_blocks(item)), default=0)
    for key, item in body.items():
        if isinstance(item, Nested):
            lines += _nested(key, item, indent)
        elif _is_blocks(item):
            assert isinstance(item, Sequence)
            for each in item:
                assert isinstance(each, Nested)
                lines += _nested(key, each, indent)
        else:
            lines.append(f"{pad}{key.ljust(width)} = {_value(item, indent)}")  # type: ignore[arg-type]
    return lines


def _is_blocks(item: object) -> bool:
    return (
        isinstance(item, Sequence)
        and not isinstance(item, str)
        and bool(item)
        and all(isinstance(each, Nested) for each in item)
    )


def _nested(kind: str, block: Nested, indent: int) -> list[str]:
    pad = "  " * indent
    head = " ".join([kind, *(string(label) for label in block.labels)])
    return [f"{pad}{head} {{", *_body(block.body, indent + 1), f"{pad}}}"]


def write_hcl(blocks: Iterable[Block]) -> str:
    """The text of one .tf file: the blocks in order, a blank line between them."""
    parts: list[str] = []
    for block in blocks:
        lines = [f"# {line}".rstrip() for line in (block.comment or "").splitlines()]
        head = " ".join([block.kind, *(string(label) for label in block.labels)])
        lines += [f"{head} {{", *_body(block.body, 1), "}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class ProviderModule:
    """What one provider's planner (`_opentofu_<provider>.py`) makes of an environment's plan."""

    providers: Mapping[str, tuple[str, str]]
    """required_providers: local name -> (source, version constraint)."""
    backend: Nested
    """The remote state backend (`backend "s3" { … }`): its labels name the kind."""
    files: Mapping[str, Sequence[Block]]
    """File name (`network.tf`) -> its blocks; `variables.tf` and `outputs.tf` included."""
    notes: tuple[str, ...] = ()
    """What this provider cannot make, or makes differently, said to the user."""
