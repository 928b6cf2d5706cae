"""The pure core: API types, placement and Serve-config rendering.

Nothing in this package performs I/O or imports Kopf, HTTP clients, Kubernetes clients or Ray; an
import-linter contract in pyproject.toml keeps it so.
"""
