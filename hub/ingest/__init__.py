"""Readings in from collectors (placeholder; the package docstring is written with the endpoint)."""
