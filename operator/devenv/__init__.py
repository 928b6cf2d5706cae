"""The local development environment: a real kube-apiserver + etcd on loopback, built from source.

Used by ``soberana dev up|down|status``, the test fixtures and the demo. Nothing here is part of the
operator that runs in production.
"""
