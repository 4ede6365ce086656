"""Helpers for the iris pipeline: plain functions, not pipelines."""


def build_features(rows: list) -> list:
    """Not decorated with @dsl.pipeline."""
    return [row for row in rows if row]
