"""Residency evidence: hash-chained, signed audit logs of routed requests and placement changes.

- :mod:`.chain`: the record format, the hash chain and the signed checkpoints (pure).
- :mod:`.verify`: checks a log's chains and checkpoints, naming the first broken record (pure).
- :mod:`.report`: what a verified log says, for an auditor (pure).
- :mod:`.writer`: appends records from a background thread to segment files in a directory.
- :mod:`.sink`: the router's and the operator's side: records from outcomes, failure behaviour.
- :mod:`.keys`: Ed25519 signing keys in files.
- :mod:`.otlp`: optionally, every record also as an OpenTelemetry log record.

See ``docs/residency-evidence.md``.
"""
