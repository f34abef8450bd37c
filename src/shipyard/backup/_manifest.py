"""A backup set's manifest and its verification report, as typed models.

Both are stored as JSON documents in the state store (`backup_sets.manifest`, `.verification`).
The models write exactly the documents earlier versions wrote, key for key and in the same order
(a field's place in its class is its key's place in the document), and read those documents
back: a set taken before these models existed is read, verified and restored like a new one.
Keys a model does not know are kept (extra="allow") and written back after the known ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from ..spec import BackupWhat


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    def stored(self) -> dict[str, Any]:
        """The JSON document the state store holds."""
        return self.model_dump(mode="json")


class PostgresArtefact(_Document):
    """A `pg_dump --format=directory` of one database, read inside an exported snapshot."""

    name: str
    """`postgres:<datastore>`."""
    type: Literal["postgres"] = "postgres"
    datastore: str
    database: str
    format: str = "pg_dump directory, uncompressed"
    snapshot_id: str
    """The restic snapshot holding the dump directory."""
    sha256: str
    """The dump directory's tree digest (`tree_digest`)."""
    files: int
    raw_bytes: int
    data_added: int
    """Bytes this artefact added to the repository (after deduplication)."""
    lsn: str
    """The WAL position of the snapshot the dump reads."""
    snapshot_time: str
    """When the snapshot was taken (ISO 8601): the moment the dump's data is as of."""
    server_version: str
    row_counts: dict[str, int]
    """Exact `count(*)` per `schema.table` inside the snapshot: what a restore must give back."""
    seconds: float


class RedisArtefact(_Document):
    """An RDB snapshot of one Redis server, fetched over the replication protocol."""

    name: str
    """`redis:<datastore>`."""
    type: Literal["redis"] = "redis"
    datastore: str
    file: str = "dump.rdb"
    """The RDB file's name inside the snapshot."""
    snapshot_id: str
    sha256: str
    raw_bytes: int
    data_added: int
    dbsize: int | None
    """The key count, when no key was written while the snapshot was taken; else None."""
    dbsize_range: tuple[int, int]
    """The key counts before and after the snapshot, lowest first: what a restore must fall in."""
    master_repl_offset: int
    redis_version: str
    seconds: float

    def expected_keys(self) -> str:
        """The key count the manifest promises, for people: `105` or `100..105`."""
        low, high = self.dbsize_range
        return str(self.dbsize) if self.dbsize is not None else f"{low}..{high}"

    def holds_keys(self, keys: int) -> bool:
        """Whether a restore that gave back `keys` keys matches the manifest."""
        low, high = self.dbsize_range
        return keys == self.dbsize if self.dbsize is not None else low <= keys <= high


class FilesArtefact(_Document):
    """A directory tree (or one file) of a volume on this host."""

    name: str
    """`files:<volume>`, the volume as the spec names it (`files:/srv/uploads`, `files:api/uploads`)."""
    type: Literal["files"] = "files"
    path: str
    """The absolute path it was read from (and a live restore writes back to)."""
    snapshot_id: str
    sha256: str
    files: int
    raw_bytes: int
    data_added: int
    seconds: float


Artefact = Annotated[PostgresArtefact | RedisArtefact | FilesArtefact, Field(discriminator="type")]
"""One source's copy in a set, told apart by its `type`."""


class Manifest(_Document):
    """What a set holds and how it was taken; written `running` first, artefacts added as each is
    stored, `finished_at` set when the set is complete or failed."""

    id: str
    spec: str
    """The stack's name."""
    environment: str
    kind: BackupWhat
    repository: str
    """The restic repository, its URL's credentials redacted."""
    restic_host: str
    sources: list[str]
    """The artefacts the set is meant to hold, in source order (a failed set may hold fewer)."""
    tools: dict[str, str]
    """The version line of each tool that took it (`restic`, `pg_dump`, …)."""
    started_at: str
    finished_at: str | None = None
    artefacts: list[Artefact] = []

    def artefact(self, name: str) -> Artefact | None:
        return next((a for a in self.artefacts if a.name == name), None)


class ArtefactHealth(_Document):
    """The last integrity check of one artefact, by a verification or a restore."""

    state: Literal["verified", "failed"]
    detail: str = ""
    """What failed (or the check that passed), for people."""
    at: str
    """When it was checked (ISO 8601)."""
    by: Literal["verify", "restore", "import"] = "verify"


class Check(_Document):
    """One check of a verification: `postgres:db` / `row counts of 3 tables` / ok."""

    artefact: str
    """The artefact's name, or `repository` for `restic check`."""
    check: str
    ok: bool
    detail: str = ""


_ABSENT_WHEN_NONE = ("seconds", "error")
"""Keys a verification report has only on some outcomes: `seconds` once the data was checked,
`error` when the means of checking failed."""


class Verification(_Document):
    """A verification's report: every check made, in order, and the outcome.

    ok: True (every check passed), False (the data does not match the manifest: the set is then
    failed) or None (the means of verifying failed, e.g. restic unreachable; `error` says how).
    """

    started_at: str
    read_data_subset: str | None
    ok: bool | None = None
    checks: list[Check] = []
    seconds: float | None = None
    error: str | None = None

    @model_serializer(mode="wrap")
    def _without_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        document: dict[str, Any] = handler(self)
        for key in _ABSENT_WHEN_NONE:
            if document.get(key, 0) is None:
                del document[key]
        return document
