"""Curation flows: one file per pipeline, each runnable as ``python flows/<name>.py``."""
