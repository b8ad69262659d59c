"""Attestation core: parsers, verifiers, policy evaluation, reference values.

Parsing, signature/chain verification and policy evaluation are separate
steps, in the manner of virtee/sev and go-sev-guest: a report is parsed once
into an immutable structure, verified by a pipeline of named checks, and the
resulting claims are evaluated against an owner's policy.
"""
