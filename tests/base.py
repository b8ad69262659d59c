"""Shared test base and fixture locations."""

from __future__ import annotations

import os
import shutil
import sys

from oslotest import base

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fixtures")


def fixture_path(*parts: str) -> str:
    """Path of a real fixture (see tests/fixtures/SOURCES.md)."""
    return os.path.join(FIXTURES, *parts)


def read_fixture(*parts: str) -> bytes:
    with open(fixture_path(*parts), "rb") as f:
        return f.read()


def installed_command(name: str) -> str:
    """The console script ``name`` installed next to this Python."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable))
    if exe is None:
        raise AssertionError(f"{name} is not installed next to "
                             f"{sys.executable}")
    return exe


class TestCase(base.BaseTestCase):
    """Base class for every test in the project."""
