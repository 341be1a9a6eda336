"""avwap shared library: schemas, bus, settings, clock, ids, artifacts, alerts."""

__version__ = "0.1.0"
