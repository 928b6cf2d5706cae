"""The Kopf operator: thin handlers around the pure core.

* :mod:`.handlers` registers Kopf indexes and handlers on one registry;
* :mod:`.snapshot` turns indexed objects into typed API objects, tolerating odd ones;
* :mod:`.reconciler` re-plans the whole world (debounced) and decides what to write;
* :mod:`.kube` writes statuses and Events through the Kubernetes API.
"""
