"""Backups proven restorable: sources, the restic repository, manifests, verification, retention."""
