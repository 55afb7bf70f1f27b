"""Readers, writers, datasets, intensity conventions and bundled samples."""
