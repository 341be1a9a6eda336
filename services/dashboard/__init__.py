"""The operator's dashboard (read-only web pages over Redis and the artifacts; docs/dashboard.md)."""
