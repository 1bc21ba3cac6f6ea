"""Runnable programs: ``python -m examples.NAME``."""
