#!/usr/bin/env python3
"""The demo app's migration: prints what it applies and exits with MIGRATION_FAIL's code.

    MIGRATION_FAIL     unset, "" or "0": succeed; an integer: exit with it; any other value: exit 1
    MIGRATION_DELAY_S  take this long (default 0)
    (either may be given for one version only as NAME__<VERSION>, e.g. MIGRATION_FAIL__v3=1)
    VERSION            named in the output

Standard library only.
"""

from __future__ import annotations

import os
import sys
import time


def _setting(name: str) -> str:
    """`NAME__<VERSION>` when set (for this version only), else `NAME`, as the app reads them."""
    specific = os.environ.get(f"{name}__{os.environ.get('VERSION', '')}")
    return (specific if specific is not None else os.environ.get(name, "")).strip()


def main() -> int:
    version = os.environ.get("VERSION", "dev")
    raw = _setting("MIGRATION_FAIL")
    code = int(raw) if raw.lstrip("-").isdigit() else (1 if raw else 0)
    delay = float(_setting("MIGRATION_DELAY_S") or 0)
    print(f"migrating the schema to version {version}", flush=True)
    for step in ("0001_create_items", "0002_add_price", "0003_index_items_by_price"):
        if delay:
            time.sleep(delay / 3)
        print(f"  applying {step} ... ok", flush=True)
    if code:
        print(f"error: migration to {version} failed (MIGRATION_FAIL={raw})", file=sys.stderr, flush=True)
    else:
        print(f"schema is at version {version}", flush=True)
    return code % 256


if __name__ == "__main__":
    sys.exit(main())
