"""Releases run by Argo Rollouts, for callers that want them by name.

Kept out of `shipyard.rollout`'s own imports: it loads the Kubernetes client, which is slow to
import, so only the code that talks to a cluster pays for it.
"""

from ._argo_releases import ArgoReleases, status_line

__all__ = ["ArgoReleases", "status_line"]
