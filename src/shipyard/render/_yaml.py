"""Deterministic YAML that Go's YAML 1.1 parsers (kubectl, Helm) read back as the same data."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

_Base: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's when PyYAML has it


class _Dumper(_Base):  # type: ignore[misc]
    """A safe dumper that also quotes what go-yaml would not read back as a string.

    PyYAML resolves only YAML 1.1's long booleans; go-yaml v2 (behind kubectl and Helm) also
    reads `y`/`n` as booleans and go-yaml v3 reads `0o17` and `1e3` as numbers, so strings shaped
    like those are given an implicit resolver here, which makes the dumper quote them.
    Objects shared between containers (one env list) are written out each time, never as
    `&id001` anchors and aliases, which readers of a manifest should not have to follow.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?0o[0-7_]+|[-+]?0b[01_]+)$"), list("-+0")
)
_Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+)$"),
    list("-+0123456789"),
)


def dump(data: Any) -> str:
    """One YAML document, keys sorted, never wrapped (a long command stays on its line)."""
    text: str = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=2**31 - 1,
    )
    return text


def dump_all(documents: Iterable[Any]) -> str:
    """A multi-document stream, each document introduced by `---`."""
    return "".join(f"---\n{dump(document)}" for document in documents)
