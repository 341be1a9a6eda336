"""The ``avwap`` command line (the operator's entry point). Commands live in ``avwap.commands``."""
