"""A stand-in for Linux configfs-tsm, driven by the secure-processor model.

``FakeConfigfsTsm`` makes ``<tmp>/sys/kernel/config/tsm/report`` and runs a
background "kernel" thread. Like the real one it bumps ``generation`` for
every write to ``inblob`` or ``privlevel``; once ``inblob`` holds report
data it writes ``provider``, ``auxblob`` (a GHCB certificate table with
the model's VCEK, ASK and ARK) and ``outblob`` (a report signed by the
model with that report data), ``outblob`` last.

configfs removes an entry's attributes with a plain ``rmdir``; an
ordinary directory does not, so the fixture replaces
``barbican_tee.client.tsm._remove_entry`` while it runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
import fixtures

from barbican_tee.client import snp_certs
from openstack_tee_demo.sp_model import snp as sp_snp


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class _Entry:
    def __init__(self) -> None:
        self.generation = 0
        self.seen: dict[str, tuple[int, int, bytes]] = {}
        self.served: bytes | None = None


class FakeConfigfsTsm(fixtures.Fixture):
    """A fake configfs-tsm tree with a background "kernel" thread.

    ``provider``: what the entry reports (``sev_guest``, ``tdx_guest`` or
    anything else to test refusal). ``auxblob``: bytes to serve instead of
    the model's table, ``b""`` for none. ``conflicts``: how many entries
    get an extra generation bump, as a concurrent writer would cause.
    ``empty_outblob``: serve an empty outblob.
    """

    def __init__(self, sp: sp_snp.SecureProcessor | None = None,
                 provider: str = "sev_guest",
                 auxblob: bytes | None = None,
                 conflicts: int = 0,
                 empty_outblob: bool = False,
                 report_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sp = sp or sp_snp.SecureProcessor()
        self.provider = provider
        self.auxblob = auxblob
        self.conflicts = conflicts
        self.empty_outblob = empty_outblob
        self.report_kwargs = report_kwargs or {}
        self.served: list[bytes] = []  # report_data of every report
        self.removed: list[str] = []

    def model_cert_table(self) -> bytes:
        der = serialization.Encoding.DER
        return snp_certs.build_cert_table({
            snp_certs.GUID_VCEK: self.sp.vcek_der,
            snp_certs.GUID_ASK: self.sp.ask.public_bytes(der),
            snp_certs.GUID_ARK: self.sp.ark.public_bytes(der),
        })

    def _setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="fake-configfs-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.root = os.path.join(self.base, "sys", "kernel", "config",
                                 "tsm", "report")
        os.makedirs(self.root)
        self._entries: dict[str, _Entry] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="fake-configfs-tsm")
        self._thread.start()
        self.addCleanup(self._thread.join, 5)
        self.addCleanup(self._stop.set)
        self.useFixture(fixtures.MonkeyPatch(
            "barbican_tee.client.tsm._remove_entry", self._rmdir))

    def _rmdir(self, path: str) -> None:
        if os.path.dirname(path) != self.root:
            raise AssertionError(f"rmdir outside the fake tree: {path}")
        with self._lock:
            shutil.rmtree(path)
            self._entries.pop(os.path.basename(path), None)
            self.removed.append(os.path.basename(path))

    # -- the "kernel" ----------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(0.002):
            with self._lock:
                try:
                    names = os.listdir(self.root)
                except OSError:
                    continue
                for name in names:
                    path = os.path.join(self.root, name)
                    entry = self._entries.get(name)
                    if entry is None:
                        entry = self._entries[name] = _Entry()
                    try:
                        self._step(path, entry)
                    except FileNotFoundError:
                        pass  # removed under us

    def _changed(self, path: str, entry: _Entry, attr: str) -> bytes | None:
        full = os.path.join(path, attr)
        try:
            with open(full, "rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            return None
        if not data or len(data) != st.st_size:
            return None  # created and not written yet, or being written
        mark = (st.st_mtime_ns, st.st_size, data)
        if entry.seen.get(attr) == mark:
            return None
        entry.seen[attr] = mark
        return data

    def _step(self, path: str, entry: _Entry) -> None:
        bumped = False
        if self._changed(path, entry, "privlevel") is not None:
            entry.generation += 1
            bumped = True
        inblob = self._changed(path, entry, "inblob")
        if inblob is not None:
            entry.generation += 1
            bumped = True
        if not bumped:
            return
        if inblob is not None and self.conflicts > 0:
            self.conflicts -= 1
            entry.generation += 1  # somebody else wrote meanwhile
        _atomic_write(os.path.join(path, "generation"),
                      f"{entry.generation}\n".encode())
        if inblob is None:
            return
        _atomic_write(os.path.join(path, "provider"),
                      f"{self.provider}\n".encode())
        auxblob = (self.model_cert_table() if self.auxblob is None
                   else self.auxblob)
        if auxblob:
            _atomic_write(os.path.join(path, "auxblob"), auxblob)
        report_data = inblob.ljust(64, b"\x00")[:64]
        if self.empty_outblob:
            outblob = b""
        else:
            outblob = self.sp.report(report_data=report_data,
                                     **self.report_kwargs)
        self.served.append(report_data)
        _atomic_write(os.path.join(path, "outblob"), outblob)
