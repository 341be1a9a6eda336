"""The exits service."""
