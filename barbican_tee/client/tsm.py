"""Evidence through Linux configfs-tsm (``/sys/kernel/config/tsm/report``).

One interface for SEV-SNP and TDX guests (Linux >= 6.7): make a report
entry directory, write up to 64 bytes of report data to ``inblob``
(optionally the VMPL to ``privlevel``), read ``outblob`` (the SNP report
or TDX quote), ``auxblob`` (the SNP certificate table, when the host gives
one) and ``provider``, and remove the directory.

``generation`` counts writes to the entry's attributes. It is read right
after the directory is made and again after ``outblob``: if it moved by
more than our own writes, somebody else wrote to the entry meanwhile and
``outblob`` may not be ours. That is retried once in a fresh entry, then
reported as an error.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import time

DEFAULT_ROOT = "/sys/kernel/config/tsm/report"
#: Providers this client knows how to turn into evidence.
PROVIDERS = ("sev_guest", "tdx_guest")
MAX_INBLOB = 64
#: How long to wait for a non-empty ``outblob`` (seconds).
DEFAULT_WAIT = 10.0
_POLL = 0.01


class TSMError(Exception):
    """configfs-tsm cannot give a report; ``code`` is stable.

    Codes: ``tsm_unavailable`` (configfs-tsm missing),
    ``tsm_permission`` (not allowed to make a report entry),
    ``tsm_unknown_provider``, ``tsm_empty_outblob``,
    ``tsm_conflict`` (a concurrent writer, twice),
    ``tsm_bad_argument``, ``tsm_io_error``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"TSMError(code={self.code!r}, {self.message!r})"


@dataclasses.dataclass(frozen=True)
class Report:
    """What one configfs-tsm report entry returned."""

    provider: str
    outblob: bytes
    auxblob: bytes | None
    generation: int


def _remove_entry(path: str) -> None:
    """Remove a report entry (configfs drops the attributes with it)."""
    os.rmdir(path)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes) -> None:
    # configfs attributes always exist; O_CREAT only matters to a stand-in
    # tree on an ordinary file system (tests).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # configfs binary attributes take the whole value in one write.
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {path}")
    finally:
        os.close(fd)


def _generation(entry: str) -> int:
    try:
        raw = _read(os.path.join(entry, "generation"))
    except FileNotFoundError:
        # Not written yet by a stand-in tree: nothing was written either.
        return 0
    try:
        return int(raw.strip() or b"0")
    except ValueError:
        raise TSMError("tsm_io_error",
                       f"{entry}/generation is not a number") from None


def _unavailable(root: str, why: str) -> TSMError:
    return TSMError(
        "tsm_unavailable",
        f"configfs-tsm is not usable at {root}: {why}. It needs Linux >= "
        "6.7 with CONFIG_TSM_REPORTS, the sev-guest or tdx-guest driver "
        "loaded, and configfs mounted (mount -t configfs none "
        "/sys/kernel/config)")


class TSMReporter:
    """Get reports from one configfs-tsm report directory."""

    def __init__(self, root: str = DEFAULT_ROOT,
                 wait: float = DEFAULT_WAIT) -> None:
        self.root = root
        self.wait = wait

    def check(self) -> None:
        """Raise ``tsm_unavailable`` unless the report directory exists."""
        if not os.path.isdir(self.root):
            parent = os.path.dirname(self.root.rstrip("/"))
            why = ("the report directory does not exist"
                   if os.path.isdir(parent) else
                   f"{parent} does not exist (is configfs mounted?)")
            raise _unavailable(self.root, why)

    def get_report(self, inblob: bytes,
                   privlevel: int | None = None) -> Report:
        """A report (or quote) whose report data is ``inblob``."""
        if len(inblob) > MAX_INBLOB:
            raise TSMError("tsm_bad_argument",
                           f"inblob is {len(inblob)} bytes; configfs-tsm "
                           f"takes at most {MAX_INBLOB}")
        if privlevel is not None and not 0 <= privlevel <= 3:
            raise TSMError("tsm_bad_argument",
                           f"privlevel {privlevel} is not in 0..3")
        self.check()
        try:
            return self._attempt(inblob, privlevel)
        except _Conflict:
            pass
        try:
            return self._attempt(inblob, privlevel)
        except _Conflict as exc:
            raise TSMError(
                "tsm_conflict",
                f"another process wrote to the report entry while it was "
                f"in use, twice (generation {exc.seen}, expected "
                f"{exc.expected}); try again") from None

    def _make_entry(self) -> str:
        name = f"tee-guest-{os.getpid()}-{secrets.token_hex(6)}"
        entry = os.path.join(self.root, name)
        try:
            os.mkdir(entry)
        except FileNotFoundError:
            raise _unavailable(self.root, "the report directory "
                                          "disappeared") from None
        except PermissionError:
            raise TSMError("tsm_permission",
                           f"not allowed to create a report entry in "
                           f"{self.root} (run as root)") from None
        except OSError as exc:
            raise TSMError("tsm_io_error",
                           f"cannot create a report entry in {self.root}: "
                           f"{exc.strerror}") from None
        return entry

    def _attempt(self, inblob: bytes, privlevel: int | None) -> Report:
        entry = self._make_entry()
        try:
            return self._collect(entry, inblob, privlevel)
        except OSError as exc:
            raise TSMError("tsm_io_error",
                           f"configfs-tsm report entry {entry}: "
                           f"{exc.strerror or exc}") from None
        finally:
            try:
                _remove_entry(entry)
            except OSError:
                pass

    def _collect(self, entry: str, inblob: bytes,
                 privlevel: int | None) -> Report:
        start = _generation(entry)
        writes = 0
        if privlevel is not None:
            try:
                _write(os.path.join(entry, "privlevel"),
                       str(privlevel).encode())
            except OSError as exc:
                raise TSMError("tsm_bad_argument",
                               f"the provider refused privlevel "
                               f"{privlevel}: {exc.strerror}") from None
            writes += 1
        _write(os.path.join(entry, "inblob"), inblob)
        writes += 1
        outblob = self._read_outblob(entry)
        auxblob: bytes | None
        try:
            auxblob = _read(os.path.join(entry, "auxblob")) or None
        except FileNotFoundError:
            auxblob = None
        provider = _read(os.path.join(entry, "provider")).decode(
            "ascii", "replace").strip()
        end = _generation(entry)
        if end != start + writes:
            raise _Conflict(end, start + writes)
        if provider not in PROVIDERS:
            raise TSMError("tsm_unknown_provider",
                           f"configfs-tsm provider {provider!r} is not "
                           f"one of {', '.join(PROVIDERS)}")
        return Report(provider=provider, outblob=outblob,
                      auxblob=auxblob, generation=end)

    def _read_outblob(self, entry: str) -> bytes:
        path = os.path.join(entry, "outblob")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                data = _read(path)
            except FileNotFoundError:
                data = b""
            if data:
                return data
            if time.monotonic() >= deadline:
                raise TSMError("tsm_empty_outblob",
                               f"configfs-tsm returned no report in "
                               f"{path} (outblob is empty)")
            time.sleep(_POLL)


class _Conflict(Exception):
    def __init__(self, seen: int, expected: int) -> None:
        super().__init__(seen, expected)
        self.seen = seen
        self.expected = expected


def get_report(inblob: bytes, root: str = DEFAULT_ROOT,
               privlevel: int | None = None,
               wait: float = DEFAULT_WAIT) -> Report:
    """Shortcut for ``TSMReporter(root, wait).get_report(...)``."""
    return TSMReporter(root, wait).get_report(inblob, privlevel)
