"""Validate domain XML against libvirt 12.8.0's RelaxNG schema.

The 12.8.0 domain grammar (tests/fixtures/libvirt-12.8.0-debian-schemas)
includes helper grammars that are not among the fixtures; the unchanged ones
come from Debian's installed libvirt schemas (/usr/share/libvirt/schemas,
package libvirt0) and sysinfocommon.rng, new since then, from libvirt's git
(tests/fixtures/libvirt-git-918594b, see SOURCES.md).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from tests import base

SYSTEM_SCHEMAS = "/usr/share/libvirt/schemas"


class SchemaError(AssertionError):
    pass


def _schema_dir() -> str:
    tmp = tempfile.mkdtemp(prefix="libvirt-rng-")
    sources = [
        os.path.join(SYSTEM_SCHEMAS, "*.rng"),
        base.fixture_path("libvirt-12.8.0-debian-schemas", "*.rng"),
        base.fixture_path("libvirt-git-918594b", "src", "conf", "schemas",
                          "*.rng"),
    ]
    for pattern in sources:  # later sources override earlier ones
        for path in glob.glob(pattern):
            shutil.copy(path, tmp)
    if not os.path.exists(os.path.join(tmp, "domainoverrides.rng")):
        raise SchemaError(f"libvirt's schemas are missing from "
                          f"{SYSTEM_SCHEMAS} (install libvirt0)")
    return tmp


def validate_domain(xml: str) -> None:
    """Raise :class:`SchemaError` with xmllint's words if ``xml`` fails."""
    if shutil.which("xmllint") is None:
        raise SchemaError("xmllint (Debian libxml2-utils) is required")
    tmp = _schema_dir()
    try:
        path = os.path.join(tmp, "candidate.xml")
        with open(path, "w") as f:
            f.write(xml)
        proc = subprocess.run(
            ["xmllint", "--noout", "--relaxng",
             os.path.join(tmp, "domain.rng"), path],
            capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(tmp)
    if proc.returncode != 0 or "failed to compile" in proc.stderr:
        raise SchemaError(f"{proc.stderr}\n{xml}")
