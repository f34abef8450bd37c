"""The flag formats shipyard reads and writes, by name: one table for the CLI, ops and the API.

    shipyard          shipyard's own flag set (YAML or JSON): every flag whole, every environment
    unleash           Unleash's admin export (or, to read, its client API state), one environment
    flagd             flagd's flag definitions, one environment
    openfeature-json  the OpenFeature CLI's flag manifest: types, defaults and descriptions

A reader turns a parsed document into an `Imported` flag set, a writer a flag set into an
`Exported` document; both raise InvalidObjectError naming every construct the other side cannot
hold, so an import or an export is all or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from ..errors import InvalidObjectError
from ..spec.flags import FlagSet
from ._conversion import Exported, Imported, flagset_from_data
from ._flagd import export_flagd, import_flagd
from ._openfeature_json import export_manifest, import_manifest
from ._unleash_export import unleash_document
from ._unleash_import import from_unleash

__all__ = ["FORMATS", "FlagFormat", "FormatName", "flag_format"]


class FormatName(StrEnum):
    shipyard = "shipyard"
    unleash = "unleash"
    flagd = "flagd"
    openfeature_json = "openfeature-json"


Reader = Callable[[object, str], Imported]
"""(the parsed document, the environment a one-environment format is read into) → flags."""
Writer = Callable[[FlagSet, str], Exported]
"""(the flag set, the environment a one-environment format holds) → document."""


@dataclass(frozen=True)
class FlagFormat:
    name: FormatName
    read: Reader
    write: Writer
    one_environment: bool
    """The format holds one environment: reading and writing it take one (`--env`)."""


def _read_shipyard(data: object, environment: str) -> Imported:
    return Imported(flagset_from_data(data if data is not None else {}))


def _write_shipyard(flagset: FlagSet, environment: str) -> Exported:
    return Exported(flagset.to_data())


def _read_unleash(data: object, environment: str) -> Imported:
    imported = from_unleash(data, environment=environment)
    described = {environment} | {e for f in imported.flagset.flags for e in f.environments}
    return Imported(imported.flagset, list(imported.warnings), environments=frozenset(described))


def _write_unleash(flagset: FlagSet, environment: str) -> Exported:
    """Unleash's admin export, refused when it would leave a flag out (each named with the reason):
    a file that silently lacks a flag would leave the app asking Unleash for one it never has."""
    exported = unleash_document(flagset, environment)
    if exported.warnings:
        raise InvalidObjectError(
            f"the flag set cannot be exported to Unleash (environment {environment!r})",
            [("", warning) for warning in exported.warnings],
        )
    return exported


FORMATS: dict[FormatName, FlagFormat] = {
    f.name: f
    for f in (
        FlagFormat(FormatName.shipyard, _read_shipyard, _write_shipyard, one_environment=False),
        FlagFormat(FormatName.unleash, _read_unleash, _write_unleash, one_environment=True),
        FlagFormat(FormatName.flagd, import_flagd, export_flagd, one_environment=True),
        FlagFormat(FormatName.openfeature_json, import_manifest, export_manifest, one_environment=False),
    )
}


def flag_format(name: FormatName | str) -> FlagFormat:
    """The format called `name` (a FormatName, or its value)."""
    return FORMATS[FormatName(name)]
