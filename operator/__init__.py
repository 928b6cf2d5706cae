"""soberana's control plane: the API types, the placement engine, Serve rendering and the operator.

Installed as ``soberana.operator`` (the folder is ``operator/``; ``operator`` itself is a standard
library module). The pure core lives in :mod:`soberana.operator.core` and does no I/O; everything
else here is an adapter around it.
"""
