"""soberana's data plane: the Ray Serve model runtime and the global router."""
