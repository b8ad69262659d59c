"""What each role installs: the extras of the ``openstack-tee`` package.

``pyproject.toml``'s ``[project.optional-dependencies]`` declares them;
this module names the distributions a command needs, so that the command
says which extra to install instead of failing deep inside (a
``ModuleNotFoundError`` from ``barbican-manage``). Presence is checked by
the distribution's installed metadata, without importing anything (a
distribution packaged by the operating system has that metadata too).
"""

from __future__ import annotations

import importlib.metadata

BARBICAN = ("barbican", "gunicorn", "gevent")
NOVA = ("nova",)
DEMO = BARBICAN + NOVA + ("libvirt-python", "openstack-placement",
                          "wsgi-intercept", "fixtures", "oslotest",
                          "testtools")
EXTRAS = {"barbican": BARBICAN, "nova": NOVA, "demo": DEMO}


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed."""
    out = []
    for name in EXTRAS[extra]:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def check(extra: str, command: str) -> str | None:
    """None, or the message ``command`` prints when ``extra`` is missing."""
    absent = missing(extra)
    if not absent:
        return None
    return (f"{command} needs {', '.join(absent)}, which "
            f"{'is' if len(absent) == 1 else 'are'} not installed: "
            f"pip install 'openstack-tee[{extra}]'")
