"""Functions of the benchmark pipelines."""

from __future__ import annotations


def identity(items):
    return [{"y": item["x"]} for item in items]
