"""Pluggable evidence verifiers: the interface and the registry.

An evidence format (``evidence["format"]`` in a release request) is a
plugin in the ``openstack_tee.evidence`` entry-point namespace, named by
the format it verifies. Its class derives from :class:`EvidenceVerifier`:
it is built once per API filter with the configuration, parses and
verifies the evidence against its trust roots into a
:class:`VerifiedEvidence`, and evaluates the owner's policy against it.
The release route only compares ``report_data`` with its challenge and
releases; everything format-specific stays in the plugin.

The two formats of this package are plugins like any other
(:mod:`barbican_tee.attestation.snp_evidence`,
:mod:`barbican_tee.attestation.tdx_evidence`). An operator opts in to a
third-party one by listing it in ``[tee_attestation] evidence_formats``;
an installed plugin that is not listed is never loaded or used.

Endorsement sources (``openstack_tee.endorsements``) provide what a guest
did not send (a VCEK, collateral): an :class:`EndorsementSource` answers
with bytes that the format's verifier then checks against its trust roots
exactly as if the guest had sent them, so a source never adds trust.

Loading is done once per process. An entry point that fails to import,
that is not an :class:`EvidenceVerifier`, whose name differs from its
class's ``format``, or whose name two distributions both claim, is logged
once and its format refused: never a fallback that accepts.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
import dataclasses
import datetime
import hashlib
import hmac
import threading
from typing import Any
from typing import ClassVar

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import extension

from barbican_tee.attestation import errors
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.conf import attestation as attestation_conf

LOG = logging.getLogger(__name__)

EVIDENCE_NAMESPACE = "openstack_tee.evidence"
ENDORSEMENT_NAMESPACE = "openstack_tee.endorsements"


class MalformedEvidence(errors.InvalidInput):
    """The request's evidence object lacks a field or is not decodable.

    The REST layer answers 400 (the request is wrong), unlike the other
    attestation errors (403: the evidence does not verify).
    """

    code = "evidence_invalid"


@dataclasses.dataclass(frozen=True)
class VerifiedEvidence:
    """What verified evidence proves, as the release path needs it.

    ``details`` is the format's own verified object (for the built-in
    formats :class:`~barbican_tee.attestation.snp.VerifiedReport` and
    :class:`~barbican_tee.attestation.tdx.TdxClaims`), which the format's
    own :meth:`EvidenceVerifier.evaluate` reads.
    """

    format: str
    # The policy model (``Policy.tee``) this evidence is evaluated under.
    tee: str
    # The 64 bytes the guest bound into its evidence (SHA-512 of the
    # challenge nonce and its key's thumbprint).
    report_data: bytes
    # The launch measurement (SNP MEASUREMENT, TDX MRTD).
    measurement: bytes
    # What the host set at launch to name the instance (SNP HOST_DATA,
    # TDX MRCONFIGID).
    instance_data: bytes
    # The platform's TCB as reported/verified, field name -> value.
    tcb: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # The product ("milan", "genoa", "turin", "tdx", ...), if known.
    product: str | None = None
    chip_id: bytes | None = None
    # The guest policy (SNP) or TD attributes (TDX), as one integer.
    policy_bits: int | None = None
    details: Any = dataclasses.field(default=None, repr=False,
                                     compare=False)


class EvidenceVerifier(abc.ABC):
    """One evidence format. Subclasses set :attr:`format`."""

    format: ClassVar[str]

    def __init__(self, conf: cfg.ConfigOpts,
                 sources: tuple[EndorsementSource, ...] = ()) -> None:
        self.conf = conf
        self.sources = sources

    @abc.abstractmethod
    def verify(self, evidence: Mapping[str, Any],
               now: datetime.datetime) -> VerifiedEvidence:
        """Parse and verify ``evidence`` up to the trust roots at ``now``.

        Raise :class:`MalformedEvidence` for a request that lacks what the
        format needs, another :class:`~barbican_tee.attestation.errors.
        InvalidInput` or :class:`~barbican_tee.attestation.errors.
        VerificationFailed` (with its stable code) for evidence that does
        not verify.
        """

    @abc.abstractmethod
    def evaluate(self, policy: policy_mod.Policy,
                 verified: VerifiedEvidence,
                 instance_uuid: str | None) -> policy_mod.Result:
        """Every failed check of the owner's policy, and of the binding.

        ``instance_uuid`` is the instance the secret is bound to (None:
        bound to none): evidence from any other instance must fail with
        ``instance_mismatch``.
        """

    @staticmethod
    def check_instance_binding(verified: VerifiedEvidence,
                               instance_uuid: str | None, hash_name: str,
                               message: str) -> policy_mod.Result | None:
        """The ``instance_mismatch`` refusal, or None: nothing to refuse.

        Nova launches the bound instance with the ``hash_name`` digest
        (SNP HOST_DATA: ``sha256``, TDX MRCONFIGID: ``sha384``) of
        ``openstack-tee:v1:<instance uuid>`` as its ``instance_data``;
        anything else is another instance. ``message`` names the field
        in the format's own words. None also when ``instance_uuid`` is
        None (the secret is bound to no instance).
        """
        if instance_uuid is None:
            return None
        expected = hashlib.new(hash_name, b"openstack-tee:v1:"
                               + instance_uuid.encode()).digest()
        if hmac.compare_digest(verified.instance_data, expected):
            return None
        return policy_mod.Result((policy_mod.Failure(
            "instance_mismatch", message),))


class SourceUnavailable(errors.VerificationFailed):
    """An endorsement source cannot answer now (say, a database error).

    Refused (answered 503: try later), never released without it.
    """

    code = "endorsement_unavailable"


class EndorsementSource(abc.ABC):
    """Where endorsements the guest did not send may come from.

    Whatever a source returns is verified by the format's verifier
    against its configured trust roots, as if the guest had sent it.
    """

    name: ClassVar[str]
    # Called behind a per-process cache and rate bound
    # (:mod:`barbican_tee.attestation.source_bound`); False only for a
    # source that reads local state and must be seen changed at once. A
    # class attribute ``bound_policy`` (source_bound.BoundPolicy) can
    # instead narrow which answers are cached and drop the limits.
    bounded: ClassVar[bool] = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    def snp_endorsement(self, chip_id: bytes, reported_tcb: int,
                        signer: str) -> bytes | None:
        """The VCEK or VLEK for a report, or None: not known here.

        ``chip_id`` and ``reported_tcb`` (the raw 64-bit TCB_VERSION)
        are the unverified report's; ``signer`` is ``vcek`` or ``vlek``.
        The answer is PEM or DER, optionally followed by its ASK/ARK.
        """
        return None

    def tdx_collateral(self, quote: bytes) -> str | None:
        """QuoteCollateralV3 (JSON text) for a quote, or None."""
        return None

    def tdx_collateral_number(self, quote: bytes) -> int | None:
        """The highest verified tcbEvaluationDataNumber held, or None.

        For the quote's platform (FMSPC). Collateral the guest sends with
        a lower number is refused (``tdx_collateral_outdated``): an older
        genuine collateral must not undo a TCB recovery the source already
        knows of.
        """
        return None

    def tdx_collateral_crls(self, quote: bytes) -> list[bytes]:
        """The CRLs (DER) of verified collateral held, or none.

        For the quote's platform (FMSPC): its PCK CA's and the root CA's.
        A CRL the guest sends that is older than one of the same issuer
        held here is refused (``tdx_collateral_outdated``): an older
        genuine CRL, still inside its nextUpdate, must not undo the
        revocation of a platform's PCK certificate the source knows of.
        """
        return []

    def tdx_collateral_verified(self, quote: bytes, collateral: str) -> None:
        """Told of collateral (JSON text) that verified ``quote``."""
        return None

    def snp_crls(self, product: str) -> list[bytes]:
        """AMD CRLs (DER) for ``product`` ("milan", "genoa", "turin").

        Asked for every SNP report, whoever sent its VCEK. Each CRL must
        be signed by the product's pinned ARK and not be past its
        nextUpdate; one that revokes the report's ASK/ASVK refuses it.
        """
        return []


_lock = threading.Lock()
_loaded: dict[str, dict[str, type[Any] | None]] = {}
_warned: set[tuple[str, str]] = set()


def _warn_once(namespace: str, name: str, message: str,
               *args: Any) -> None:
    with _lock:
        if (namespace, name) in _warned:
            return
        _warned.add((namespace, name))
    LOG.error(message, *args)


def _entry_value(ep: Any) -> str:
    return str(getattr(ep, "value", ep))


def load_plugins(namespace: str,
                 base: type[Any]) -> Mapping[str, type[Any] | None]:
    """name -> plugin class (None: present but refused), once a process."""
    with _lock:
        done = _loaded.get(namespace)
    if done is not None:
        return done
    found: dict[str, type[Any] | None] = {}
    values: dict[str, str] = {}

    def failed(_manager: Any, ep: Any, exc: BaseException) -> None:
        _warn_once(namespace, ep.name,
                   "openstack-tee: plugin %s in %s (%s) failed to load; "
                   "it is refused: %s", ep.name, namespace,
                   _entry_value(ep), exc)
        found[ep.name] = None
        values[ep.name] = _entry_value(ep)

    manager = extension.ExtensionManager(
        namespace, invoke_on_load=False, on_load_failure_callback=failed)
    for ext in manager:
        value = _entry_value(ext.entry_point)
        if ext.name in values:
            if values[ext.name] != value:
                # Two distributions claim one name: which one wins would
                # depend on the installation order, so neither does.
                _warn_once(namespace, ext.name,
                           "openstack-tee: plugin name %s in %s is "
                           "claimed by both %s and %s; it is refused",
                           ext.name, namespace, values[ext.name], value)
                found[ext.name] = None
            continue
        values[ext.name] = value
        plugin = ext.plugin
        own = getattr(plugin, "format", getattr(plugin, "name", None))
        if not (isinstance(plugin, type) and issubclass(plugin, base)
                and own == ext.name):
            _warn_once(namespace, ext.name,
                       "openstack-tee: plugin %s in %s (%s) is not a %s "
                       "named %s; it is refused", ext.name, namespace,
                       value, base.__name__, ext.name)
            found[ext.name] = None
            continue
        found[ext.name] = plugin
    with _lock:
        return _loaded.setdefault(namespace, found)


class EvidenceVerifiers:
    """The formats enabled in ``[tee_attestation]``, built for ``conf``.

    A format that is enabled but not installed, or whose plugin was
    refused, is logged and refused like an unknown one. A plugin that
    raises while it is built (a missing trust-root file, say) stops the
    API, as any other configuration error does.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        attestation_conf.register_opts(conf)
        group = conf.tee_attestation
        source_classes = load_plugins(ENDORSEMENT_NAMESPACE,
                                      EndorsementSource)
        sources: list[EndorsementSource] = []
        for name in group.endorsement_sources:
            source_cls = source_classes.get(name)
            if source_cls is None:
                _warn_once(ENDORSEMENT_NAMESPACE, name,
                           "openstack-tee: endorsement source %s is "
                           "enabled but not available; it is not used",
                           name)
                continue
            # The report's unverified chip id reaches the source from a
            # token-less route: bounded per process.
            from barbican_tee.attestation import source_bound

            sources.append(source_bound.bound(source_cls(conf), conf))
        classes = load_plugins(EVIDENCE_NAMESPACE, EvidenceVerifier)
        self.enabled: tuple[str, ...] = tuple(group.evidence_formats)
        self._verifiers: dict[str, EvidenceVerifier] = {}
        for name in self.enabled:
            verifier_cls = classes.get(name)
            if verifier_cls is None:
                _warn_once(EVIDENCE_NAMESPACE, name,
                           "openstack-tee: evidence format %s is enabled "
                           "but its verifier is not available; evidence "
                           "in it is refused", name)
                continue
            self._verifiers[name] = verifier_cls(conf, tuple(sources))

    def get(self, fmt: Any) -> EvidenceVerifier | None:
        """The verifier of ``fmt``, or None: refuse the evidence."""
        if not isinstance(fmt, str):
            return None
        return self._verifiers.get(fmt)

    def describe(self) -> str:
        """The formats accepted, for an error message."""
        names = list(self._verifiers) or ["(none enabled)"]
        if len(names) == 1:
            return names[0]
        return ", ".join(names[:-1]) + " or " + names[-1]
