"""Where releases run: this host (HAProxy + supervised processes) or Kubernetes.

The process supervisor is public: the DR package runs a Patroni datastore's processes under it,
as the local target runs app instances.
"""

from ._processes import Instance, InstanceSpec, Supervisor

__all__ = ["Instance", "InstanceSpec", "Supervisor"]
