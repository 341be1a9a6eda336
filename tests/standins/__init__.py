"""Local stand-ins of external APIs (127.0.0.1 only) for tests."""
