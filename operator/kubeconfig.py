"""Where soberana's processes find their Kubernetes credentials: one rule for all of them.

``kubeconfig`` if given, else the in-cluster service account, else ``$KUBECONFIG`` or
``~/.kube/config``. The operator (and Kopf's own login) and the router all use it.
"""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """Client settings for the API server, by the rule above."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except config.ConfigException:
            pass
    await config.load_kube_config(
        config_file=kubeconfig or os.environ.get("KUBECONFIG"),
        client_configuration=configuration,
    )
    return configuration
