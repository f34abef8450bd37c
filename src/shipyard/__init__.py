"""shipyard: one spec to zero-downtime releases, flags, verified backups, DR drills and cost."""

__version__ = "0.1.0"
