"""A whole backup set (PostgreSQL, Redis, files) into an S3 repository, verified by a real restore
from it: the same commands as a local repository, with the bucket on moto's server on loopback."""

from __future__ import annotations

import json

from shipyard.backup._resp import RespClient
from support.backup_stack import backup_stack, redis_keys, table_checksums
from support.s3 import s3_server


def test_full_backup_to_s3_verifies_and_restores_identical_data() -> None:
    with s3_server() as s3, backup_stack() as stack:
        url = s3.restic_url("shop/restic")
        spec = stack.spec.read_text().replace("repository: ./repo", f"repository: {url}")
        stack.spec.write_text(spec)
        env = stack.cli_env(**s3.env)

        taken = json.loads(stack.run("backup", "full", "-f", str(stack.spec), "-o", "json", env=env).stdout)
        assert taken["state"] == "complete"
        assert not (stack.base / "repo").exists()  # nothing went to a local directory
        keys = s3.list_keys("shop/restic/")
        assert any(key.startswith("shop/restic/snapshots/") for key in keys)
        assert any(key.startswith("shop/restic/data/") for key in keys)

        verified = stack.run("backup", "verify", taken["id"], "-f", str(stack.spec), "-o", "json", env=env)
        assert json.loads(verified.stdout)["state"] == "verified", verified.stdout

        before_tables = table_checksums(stack.postgres, "app")
        before_keys = redis_keys(stack.redis.port, stack.redis.password)
        stack.postgres.psql("DELETE FROM orders WHERE id % 2 = 0", database="app")
        with RespClient("127.0.0.1", stack.redis.port, password=stack.redis.password) as redis:
            redis.call("DEL", "cart:7", "queue")
        for what in ("database", "redis"):
            restore = ("restore", what, "--set", taken["id"], "--into", "live", "--yes")
            stack.run(*restore, "-f", str(stack.spec), env=env)
        assert table_checksums(stack.postgres, "app") == before_tables
        assert redis_keys(stack.redis.port, stack.redis.password) == before_keys
        # The password and the S3 secret never reach the set's record.
        shown = stack.run("backup", "show", taken["id"], "-o", "json", env=env).stdout
        assert s3.secret_access_key not in shown
        assert stack.password not in shown
