"""The regime classifier: one label per session from daily bars (docs/regime.md)."""
