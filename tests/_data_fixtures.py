"""Helpers shared by the dataset preparation tests (COCO, VisDrone): reading YOLO label files back."""

from __future__ import annotations

from pathlib import Path

import pytest

TOL = 1e-6  # labels are written with 6 decimals


def read_labels(path: Path) -> list[list[float]]:
    """The rows of a YOLO label file as ``[cls, cx, cy, w, h]`` floats."""
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def assert_rows(rows: list[list[float]], expected: list[list[float]]) -> None:
    """Label rows equal ``expected``: the class exactly, the box to the written precision."""
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected):
        assert row[0] == exp[0]
        assert row[1:] == pytest.approx(exp[1:], abs=TOL)
