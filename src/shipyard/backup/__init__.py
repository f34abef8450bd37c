"""Backups proven restorable: sources, the restic repository, manifests, verification, retention.

A backup set is recorded in the state store before anything is read, and is restorable only once
`complete` (every artefact stored in restic) or `verified` (restored for real and checked).
"""

from ._connect import KINDS, FilesSource, PostgresSource, RedisSource, secret_env_name, sources_of
from ._disaster_wal import Commit, WalAtDisaster, freeze_wal
from ._freshness import SourceFreshness, check_freshness
from ._pgbackrest import (
    BackupKind,
    PgBackRest,
    PgBackRestSettings,
    PitrBackup,
    PitrStatus,
    settings_from_spec,
)
from ._pitr_ops import (
    PitrBackupResult,
    PitrRestoreResult,
    PitrStanza,
    expire_stanza,
    init_stanza,
    kind_word,
    open_stanza,
    parse_target_time,
    pitr_config_path,
    plan_expire,
    plan_init,
    plan_restore_pitr,
    restore_pitr,
    start_stream,
    stop_stream,
    stream_status,
    take_backup,
    window_data,
)
from ._prune import PruneResult, prune, retention_plan
from ._restic import BackupProgress, BackupSummary, CheckResult, ResticRepository, Snapshot
from ._restore import (
    RestoreResult,
    plan_restore,
    plan_restore_volumes,
    restore_database,
    restore_files,
    restore_redis,
    restore_volumes,
)
from ._retention import RetentionPlan, SetFacts, plan_retention
from ._run import PAUSE_ENV, open_repository, plan_backup, run_backup
from ._scratch import ScratchPostgres, ScratchRedis, scratch_postgres, scratch_redis, start_scratch_postgres
from ._sets import BackupSet, get_set, latest_set, list_sets, reap_abandoned
from ._sources import TreeDigest, redis_dbsize, row_counts, tree_digest
from ._verify import verify_set

__all__ = [
    "KINDS",
    "PAUSE_ENV",
    "BackupKind",
    "BackupProgress",
    "BackupSet",
    "BackupSummary",
    "CheckResult",
    "Commit",
    "FilesSource",
    "PgBackRest",
    "PgBackRestSettings",
    "PitrBackup",
    "PitrBackupResult",
    "PitrRestoreResult",
    "PitrStanza",
    "PitrStatus",
    "PostgresSource",
    "PruneResult",
    "RedisSource",
    "ResticRepository",
    "RestoreResult",
    "RetentionPlan",
    "ScratchPostgres",
    "ScratchRedis",
    "SetFacts",
    "Snapshot",
    "SourceFreshness",
    "TreeDigest",
    "WalAtDisaster",
    "check_freshness",
    "expire_stanza",
    "freeze_wal",
    "get_set",
    "init_stanza",
    "kind_word",
    "latest_set",
    "list_sets",
    "open_repository",
    "open_stanza",
    "parse_target_time",
    "pitr_config_path",
    "plan_backup",
    "plan_expire",
    "plan_init",
    "plan_restore",
    "plan_restore_pitr",
    "plan_restore_volumes",
    "plan_retention",
    "prune",
    "reap_abandoned",
    "redis_dbsize",
    "restore_database",
    "restore_files",
    "restore_pitr",
    "restore_redis",
    "restore_volumes",
    "retention_plan",
    "row_counts",
    "run_backup",
    "scratch_postgres",
    "scratch_redis",
    "secret_env_name",
    "settings_from_spec",
    "sources_of",
    "start_scratch_postgres",
    "start_stream",
    "stop_stream",
    "stream_status",
    "take_backup",
    "tree_digest",
    "verify_set",
    "window_data",
]
