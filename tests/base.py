"""Shared test base and fixture locations."""

from __future__ import annotations

import os

from oslotest import base

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fixtures")


def fixture_path(*parts: str) -> str:
    """Path of a real fixture (see tests/fixtures/SOURCES.md)."""
    return os.path.join(FIXTURES, *parts)


def read_fixture(*parts: str) -> bytes:
    with open(fixture_path(*parts), "rb") as f:
        return f.read()


class TestCase(base.BaseTestCase):
    """Base class for every test in the project."""
