"""One exception hierarchy for the attestation core, with stable codes.

Every error raised by :mod:`barbican_tee.attestation` is an
:class:`AttestationError`. Its ``code`` is a stable, machine-readable string
(the REST layer and the command line report it verbatim); its message says
what was wrong in words an operator can act on. Messages never carry key
material, secrets or plaintext.

Two families matter to callers:

* :class:`InvalidInput` -- the evidence, certificate or argument cannot be
  used at all (wrong size, unknown version, not DER). The CLI exits 2.
* :class:`VerificationFailed` -- the input is well formed but does not
  verify (bad signature, foreign root, TCB mismatch). The CLI exits 1.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class. ``code`` is stable; ``str(exc)`` is the message."""

    code: str = "attestation_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, {self.message!r})"


class InvalidInput(AttestationError):
    """Input that cannot be parsed or used (exit code 2 in the CLI)."""

    code = "invalid_input"


class VerificationFailed(AttestationError):
    """Well-formed input that fails a cryptographic or binding check."""

    code = "verification_failed"
