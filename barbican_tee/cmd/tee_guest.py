"""``tee-guest``: run inside a confidential guest to fetch its key.

``tee-guest fetch --secret ID --endpoint URL [--out FILE]
[--tsm-root PATH] [--timeout S]``

The key goes to stdout as raw bytes or, with ``--out``, into a new file
of mode 0600 (never over an existing one), fit for ``cryptsetup
--key-file``. Exit codes: 0 ok; 1 anything else; 2 configfs-tsm
unusable; 3 the service refused (its code and message are printed);
4 network failure.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
import sys
from typing import Any
from typing import BinaryIO
from typing import NoReturn
from typing import TextIO

from barbican_tee.client import guest
from barbican_tee.client import rest
from barbican_tee.client import tsm

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TSM = 2
EXIT_REFUSED = 3
EXIT_NETWORK = 4

PROG = "tee-guest"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class _OutputError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Attested key release for a "
                                            "confidential guest.")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="attest and fetch a secret")
    fetch.add_argument("--secret", required=True,
                       help="ID of the sealed secret")
    fetch.add_argument("--endpoint", required=True,
                       help="Barbican endpoint, e.g. https://kms:9311")
    fetch.add_argument("--out", metavar="FILE",
                       help="write the key to a new 0600 file instead of "
                            "stdout")
    fetch.add_argument("--tsm-root", default=tsm.DEFAULT_ROOT,
                       metavar="PATH",
                       help="configfs-tsm report directory "
                            "(default: %(default)s)")
    fetch.add_argument("--timeout", type=float, default=30.0,
                       metavar="S", help="HTTP timeout in seconds")
    fetch.add_argument("--privlevel", type=int, choices=range(4),
                       help="SEV-SNP VMPL to request the report at")
    fetch.add_argument("--collateral", metavar="FILE",
                       help="TDX: Intel PCS collateral (QuoteCollateralV3 "
                            "JSON) for this platform, sent with the quote")
    return parser


def _collateral(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except OSError as exc:
        raise _OutputError("collateral_unreadable",
                           f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise _OutputError("collateral_invalid",
                           f"{path} is not JSON") from None
    if not isinstance(doc, dict):
        raise _OutputError("collateral_invalid",
                           f"{path} is not a JSON object "
                           "(QuoteCollateralV3)")
    return doc


def _write_new_file(path: str, data: bytes) -> None:
    """Create ``path`` 0600 (O_EXCL: never overwrite) and write ``data``."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise _OutputError("output_exists",
                           f"{path} already exists; refusing to overwrite "
                           "it") from None
    except OSError as exc:
        raise _OutputError("output_unwritable",
                           f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise _OutputError("output_unwritable",
                           f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)


def _fetch(args: argparse.Namespace, stdout: BinaryIO,
           err: TextIO) -> int:
    if args.out is not None and os.path.lexists(args.out):
        # Checked early so no nonce is spent; O_EXCL checks again.
        raise _OutputError("output_exists",
                           f"{args.out} already exists; refusing to "
                           "overwrite it")
    try:
        client = rest.TEEClient(args.endpoint, timeout=args.timeout)
    except ValueError as exc:
        print(f"{PROG}: error [bad_endpoint]: {exc}", file=err)
        return EXIT_ERROR
    collateral = _collateral(args.collateral)
    reporter = tsm.TSMReporter(args.tsm_root)
    key = guest.fetch_key(client, args.secret, reporter,
                          privlevel=args.privlevel, collateral=collateral)
    if args.out is None:
        stdout.write(key)
        stdout.flush()
    else:
        _write_new_file(args.out, key)
        print(f"{PROG}: wrote {len(key)} bytes to {args.out} (mode 0600)",
              file=err)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *,
         stdout: BinaryIO | None = None,
         stderr: TextIO | None = None) -> int:
    err = stderr if stderr is not None else sys.stderr
    out = stdout if stdout is not None else sys.stdout.buffer
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return _fetch(args, out, err)
    except tsm.TSMError as exc:
        print(f"{PROG}: configfs-tsm is unusable [{exc.code}]: "
              f"{exc.message}", file=err)
        return EXIT_TSM
    except rest.TEEClientError as exc:
        if exc.status is None and exc.code == rest.NETWORK_ERROR:
            print(f"{PROG}: network failure [{exc.code}]: {exc.message}",
                  file=err)
            return EXIT_NETWORK
        if exc.status is None:
            print(f"{PROG}: error [{exc.code}]: {exc.message}", file=err)
            return EXIT_ERROR
        print(f"{PROG}: the service refused (HTTP {exc.status}) "
              f"[{exc.code}]: {exc.message}", file=err)
        return EXIT_REFUSED
    except guest.GuestError as exc:
        print(f"{PROG}: error [{exc.code}]: {exc.message}", file=err)
        return EXIT_ERROR
    except _OutputError as exc:
        print(f"{PROG}: error [{exc.code}]: {exc}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
