"""Helpers for tests and experiments (not needed at run time)."""
