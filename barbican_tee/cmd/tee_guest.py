"""``tee-guest``: run inside a confidential guest to fetch its key.

``tee-guest fetch --secret ID --endpoint URL [--out FILE]
[--tsm-root PATH] [--timeout S]``

The key goes to stdout as raw bytes or, with ``--out``, into a new file
of mode 0600 (never over an existing one), fit for ``cryptsetup
--key-file``. When the policy gives a lease (``max_age``), ``--out FILE``
also writes ``FILE.lease`` (JSON: until when the key may be held).

``tee-guest renew --secret ID --endpoint URL --out FILE
[--on-failure CMD]`` attests again (new key pair, challenge, evidence and
release) and replaces FILE atomically. When the service refuses (a 403
whose code is a verdict on this guest or secret, not a spent or late
nonce or a failure on the service's side), or renewal fails in any way
once the lease has ended, FILE is overwritten and removed, FILE.lease
removed and CMD run; any other failure while the lease still runs keeps
the key, so that the next run can retry.

The endpoint must be https: the JWE proves nothing about who made it,
so over plain http anyone on the path (the host included) could answer in
the service's place and hand the guest a key it knows. ``http://`` is
accepted only to a loopback address (a proxy inside the guest) or with
``--insecure-http`` (tests and demos).

Exit codes: 0 ok; 1 anything else; 2 configfs-tsm unusable; 3 the
service refused (its code and message are printed; for ``renew``: the key
file was dropped, and a refused request that is no verdict on the guest,
say a 400, exits 1 with the key kept); 4 network failure; 5 the service
could not answer now (429, 5xx, a 404, a spent or late nonce, a verifier
failure on its side, an answer it could not read): try again later.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any
from typing import BinaryIO
from typing import NoReturn
from typing import TextIO
from urllib import parse

from barbican_tee.client import guest
from barbican_tee.client import rest
from barbican_tee.client import tsm

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TSM = 2
EXIT_REFUSED = 3
EXIT_NETWORK = 4
EXIT_RETRY = 5

PROG = "tee-guest"
LEASE_SUFFIX = ".lease"
ON_FAILURE_TIMEOUT = 120
# 403s that say nothing about this guest: a spent or late nonce, a
# verifier plugin that failed on the service's side.
_RETRYABLE_CODES = frozenset({"nonce_unknown", "nonce_expired",
                              "evidence_verifier_error"})


def _is_verdict(exc: rest.TEEClientError) -> bool:
    """Whether the service's answer is a refusal of this guest or secret.

    Only a 403 is (the release contract's refusals); a 404 (a proxy, a
    barbican-api without the tee filter), 429, 5xx or an unreadable answer
    says nothing about the guest.
    """
    return exc.status == 403 and exc.code not in _RETRYABLE_CODES


def _is_transient(exc: rest.TEEClientError) -> bool:
    """Whether the same request may well succeed later (exit 5).

    429, 5xx, a 404 (see :func:`_is_verdict`), a spent or late nonce, a
    verifier that failed on the service's side, an answer that is not the
    contract's (a 2xx it cannot read). Not a 400 and the like: the request
    itself was wrong, and is refused (3).
    """
    status = exc.status or 0
    return (status in (404, 429) or status >= 500 or status < 400 or (
        status == 403 and exc.code in _RETRYABLE_CODES))


def _check_endpoint(endpoint: str, insecure_http: bool) -> None:
    """Refuse a plain http endpoint that is not the guest's own loopback."""
    parts = parse.urlsplit(endpoint.strip())
    if parts.scheme.lower() != "http" or insecure_http:
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise _OutputError(
            "insecure_endpoint",
            f"{endpoint} is plain http: anyone on the path could answer in "
            "the service's place; use https (or a loopback proxy), or "
            "--insecure-http for a test")


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
    renew = sub.add_parser(
        "renew", help="attest again before the key's lease ends; drop "
                      "the key when refused or when the lease ended")
    for cmd in (fetch, renew):
        cmd.add_argument("--secret", required=True,
                         help="ID of the sealed secret")
        cmd.add_argument("--endpoint", required=True,
                         help="Barbican endpoint, e.g. https://kms:9311")
        if cmd is fetch:
            cmd.add_argument("--out", metavar="FILE",
                             help="write the key to a new 0600 file "
                                  "instead of stdout (and its lease, if "
                                  "any, to FILE.lease)")
        else:
            cmd.add_argument("--out", metavar="FILE", required=True,
                             help="the key file to replace (written 0600, "
                                  "atomically); FILE.lease holds its "
                                  "lease")
            cmd.add_argument("--on-failure", metavar="CMD",
                             help="command run (no shell) after the key "
                                  "was dropped, e.g. to close a LUKS "
                                  "mapping; it gets TEE_GUEST_FAILURE_CODE,"
                                  " TEE_GUEST_SECRET_ID and "
                                  "TEE_GUEST_KEY_FILE in its environment")
        cmd.add_argument("--tsm-root", default=tsm.DEFAULT_ROOT,
                         metavar="PATH",
                         help="configfs-tsm report directory "
                              "(default: %(default)s)")
        cmd.add_argument("--insecure-http", action="store_true",
                         help="accept a plain http endpoint that is not a "
                              "loopback address (tests and demos only: "
                              "anyone on the path could hand the guest a "
                              "key it knows)")
        cmd.add_argument("--timeout", type=float, default=30.0,
                         metavar="S", help="HTTP timeout in seconds")
        cmd.add_argument("--privlevel", type=int, choices=range(4),
                         help="SEV-SNP VMPL to request the report at")
        cmd.add_argument("--collateral", metavar="FILE",
                         help="TDX: Intel PCS collateral "
                              "(QuoteCollateralV3 JSON) for this platform, "
                              "sent with the quote")
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


def _replace_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` 0600, atomically (new file, rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _OutputError("output_unwritable",
                           f"cannot remove {tmp}: {exc.strerror}") from None
    _write_new_file(tmp, data)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise _OutputError("output_unwritable",
                           f"cannot replace {path}: {exc.strerror}") from None


def _drop_file(path: str) -> bool:
    """Overwrite ``path`` with zeros and remove it; whether it existed.

    The overwrite is best effort (a journal or copy-on-write file system
    may keep old blocks): keep key files on tmpfs, e.g. under /run.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        fd = -1  # e.g. a symlink: removed below, nothing written through
    if fd >= 0:
        try:
            size = os.fstat(fd).st_size
            os.write(fd, b"\0" * size)
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def _write_lease(path: str, secret_id: str,
                 lease: guest.Lease | None) -> None:
    if lease is None:
        _drop_file(path)
        return
    doc = dict(lease.as_dict(), secret_id=secret_id)
    _replace_file(path, json.dumps(doc, sort_keys=True).encode() + b"\n")


def _lease_end(path: str) -> float | None:
    """When the held key's lease ends (POSIX seconds), None: no lease.

    A lease file that cannot be read counts as a lease that has ended.
    """
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return 0.0
    end = doc.get("expires_at") if isinstance(doc, dict) else None
    if not isinstance(end, int) or isinstance(end, bool):
        return 0.0
    return float(end)


def _lease_note(lease: guest.Lease | None) -> str:
    if lease is None:
        return "no lease"
    return (f"lease until {guest.iso_time(lease.expires_at)} (max_age "
            f"{lease.max_age} s); renew at least every "
            f"{max(1, lease.max_age // 3)} s")


def _fetch(args: argparse.Namespace, stdout: BinaryIO,
           err: TextIO, clock: Callable[[], float]) -> int:
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
    _check_endpoint(args.endpoint, args.insecure_http)
    collateral = _collateral(args.collateral)
    reporter = tsm.TSMReporter(args.tsm_root)
    released = guest.release_key(client, args.secret, reporter,
                                 privlevel=args.privlevel,
                                 collateral=collateral, clock=clock)
    key = released.key
    if args.out is None:
        stdout.write(key)
        stdout.flush()
    else:
        _write_new_file(args.out, key)
        _write_lease(args.out + LEASE_SUFFIX, args.secret, released.lease)
        print(f"{PROG}: wrote {len(key)} bytes to {args.out} (mode 0600)",
              file=err)
    if released.lease is not None:
        print(f"{PROG}: {_lease_note(released.lease)}", file=err)
    return EXIT_OK


def _renew(args: argparse.Namespace, err: TextIO,
           clock: Callable[[], float]) -> int:
    lease_path = args.out + LEASE_SUFFIX
    failure: tuple[int, str, str, bool] | None = None
    try:
        client = rest.TEEClient(args.endpoint, timeout=args.timeout)
        _check_endpoint(args.endpoint, args.insecure_http)
        released = guest.release_key(
            client, args.secret, tsm.TSMReporter(args.tsm_root),
            privlevel=args.privlevel,
            collateral=_collateral(args.collateral), renewal=True,
            clock=clock)
    except ValueError as exc:
        failure = (EXIT_ERROR, "bad_endpoint", str(exc), False)
    except rest.TEEClientError as exc:
        if exc.status is None and exc.code == rest.NETWORK_ERROR:
            failure = (EXIT_NETWORK, exc.code,
                       f"network failure: {exc.message}", False)
        elif exc.status is None:
            failure = (EXIT_ERROR, exc.code, exc.message, False)
        elif _is_verdict(exc):
            failure = (EXIT_REFUSED, exc.code,
                       f"the service refused (HTTP {exc.status}): "
                       f"{exc.message}", True)
        elif _is_transient(exc):
            failure = (EXIT_RETRY, exc.code,
                       f"the service could not answer (HTTP "
                       f"{exc.status}): {exc.message}", False)
        else:
            # Say a 400: this request was wrong, which says nothing about
            # the guest; the key stays while its lease runs.
            failure = (EXIT_ERROR, exc.code,
                       f"the service refused the request (HTTP "
                       f"{exc.status}): {exc.message}", False)
    except tsm.TSMError as exc:
        failure = (EXIT_TSM, exc.code,
                   f"configfs-tsm is unusable: {exc.message}", False)
    except (guest.GuestError, _OutputError) as exc:
        failure = (EXIT_ERROR, exc.code, str(exc), False)
    if failure is None:
        _replace_file(args.out, released.key)
        _write_lease(lease_path, args.secret, released.lease)
        print(f"{PROG}: renewed {args.out}; "
              f"{_lease_note(released.lease)}", file=err)
        return EXIT_OK
    status, code, message, refused = failure
    print(f"{PROG}: renewal failed [{code}]: {message}", file=err)
    end = _lease_end(lease_path)
    ended = end is not None and clock() >= end
    if not refused and not ended:
        if end is None:
            print(f"{PROG}: the key has no lease; {args.out} is kept",
                  file=err)
        else:
            print(f"{PROG}: the lease runs until "
                  f"{guest.iso_time(int(end))}; {args.out} is kept, "
                  "retry before then", file=err)
        return status
    why = "refused" if refused else "its lease ended"
    dropped = _drop_file(args.out)
    _drop_file(lease_path)
    print(f"{PROG}: {why}: {args.out} "
          f"{'overwritten and removed' if dropped else 'was already gone'}",
          file=err)
    _on_failure(args, code, err)
    # 3 whenever the key file was dropped, whatever the failure was.
    return EXIT_REFUSED


def _on_failure(args: argparse.Namespace, code: str, err: TextIO) -> None:
    if not args.on_failure:
        return
    env = dict(os.environ, TEE_GUEST_FAILURE_CODE=code,
               TEE_GUEST_SECRET_ID=args.secret, TEE_GUEST_KEY_FILE=args.out)
    try:
        done = subprocess.run(  # noqa: S603 - the operator's command
            shlex.split(args.on_failure), env=env, check=False,
            timeout=ON_FAILURE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"{PROG}: --on-failure command failed: {exc}", file=err)
        return
    if done.returncode != 0:
        print(f"{PROG}: --on-failure command exited {done.returncode}",
              file=err)


def main(argv: Sequence[str] | None = None, *,
         stdout: BinaryIO | None = None,
         stderr: TextIO | None = None,
         clock: Callable[[], float] = time.time) -> int:
    err = stderr if stderr is not None else sys.stderr
    out = stdout if stdout is not None else sys.stdout.buffer
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        if args.command == "renew":
            return _renew(args, err, clock)
        return _fetch(args, out, err, clock)
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
        if _is_transient(exc):
            print(f"{PROG}: the service could not answer (HTTP "
                  f"{exc.status}) [{exc.code}]: {exc.message}; try again "
                  "later", file=err)
            return EXIT_RETRY
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
