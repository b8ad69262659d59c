"""SEV and SEV-ES launch-time attestation (pre-attestation) on the host.

The flow of ARCHITECTURE.md: a launch session for this host's PDH from
barbican_tee (the guest owner), ``dhCert``/``session`` in the domain XML,
the guest started paused, its launch measurement posted, the returned
secret packet injected through libvirt, then resumed. Any failure
destroys the domain before it ever runs; the caller turns the error into
the instance fault.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.client import rest
from nova_tee import barbican
from nova_tee import conf as tee_conf

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
tee_conf.register_opts(CONF)

META_SECRET = "tee_secret"  # noqa: S105 - a metadata key name


class AttestationError(Exception):
    """Launch-time attestation failed; the message names the check."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    session_id: str
    secret_id: str
    policy: int


def client() -> rest.TEEClient:
    if not CONF.tee.barbican_url:
        raise AttestationError(
            "attestation_unconfigured",
            "[tee] barbican_url is not set on this compute host")
    return barbican.client("nova-compute",
                           float(CONF.tee.attestation_timeout))


def _call(what: str, fn: Any, *args: Any) -> Any:
    """Call the service, retrying network failures, never refusals."""
    attempts = int(CONF.tee.attestation_retries) + 1
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args)
        except rest.TEEClientError as exc:
            if exc.code == "network_error" and attempt < attempts:
                LOG.warning("openstack-tee: %s failed on the network "
                            "(attempt %d of %d)", what, attempt, attempts)
                time.sleep(min(2 ** attempt, 10))
                continue
            raise AttestationError(exc.code, f"{what}: {exc}") from None
    raise AttestationError("attestation_failed", what)


def bind(instance: Any) -> str | None:
    """Tie the instance's ``tee_secret`` to it; the secret id, or None.

    Only this instance (of the secret's project) gets the secret while
    it lives; once it is deleted (:func:`retire`) nobody does.
    """
    secret_id = (instance.metadata or {}).get(META_SECRET)
    if not secret_id:
        return None
    _call("instance binding", client().bind_instance, instance.uuid,
          secret_id, instance.project_id)
    return str(secret_id)


def retire(instance_uuid: str) -> None:
    _call("instance retirement", client().unbind_instance, instance_uuid)


def begin(instance: Any, policy: int, get_sev_info: Any
          ) -> tuple[str, str, LaunchPlan]:
    """A launch session for this host: (dh_cert, session, plan)."""
    secret_id = (instance.metadata or {}).get(META_SECRET)
    if not secret_id:
        raise AttestationError(
            "attestation_no_secret",
            f"tee:attestation=required needs the server metadata "
            f"{META_SECRET} (the id of the sealed secret to inject)")
    try:
        info = get_sev_info()
    except Exception as exc:  # noqa: BLE001 - libvirt errors vary
        raise AttestationError(
            "sev_platform_unavailable",
            f"libvirt has no node SEV information: {exc}") from None
    pdh, chain = info.get("pdh"), info.get("cert-chain")
    if not pdh or not chain:
        raise AttestationError("sev_platform_unavailable",
                               "libvirt's node SEV info lacks the PDH or "
                               "the platform certificate chain")
    svc = client()
    doc = _call("SEV launch session", svc.sev_session, secret_id, policy,
                pdh, chain, instance.uuid)
    plan = LaunchPlan(session_id=str(doc["session_id"]),
                      secret_id=secret_id, policy=policy)
    return str(doc["dh_cert"]), str(doc["session"]), plan


def finish(domain: Any, plan: LaunchPlan) -> None:
    """Measure the paused guest, get its secret packet, inject it."""
    try:
        info = domain.launchSecurityInfo(0)
    except Exception as exc:  # noqa: BLE001 - libvirt errors vary
        raise AttestationError("sev_measurement_unavailable",
                               f"no launch measurement: {exc}") from None
    try:
        measurement = str(info["sev-measurement"])
        major = int(info["sev-api-major"])
        minor = int(info["sev-api-minor"])
        build = int(info["sev-build-id"])
        policy = int(info.get("sev-policy", plan.policy))
    except (KeyError, TypeError, ValueError):
        raise AttestationError("sev_measurement_unavailable",
                               "libvirt's launch security info is "
                               "incomplete") from None
    doc = _call("SEV secret", client().sev_measurement, plan.session_id,
                measurement, major, minor, build, policy)
    try:
        domain.setLaunchSecurityState({
            "sev-secret-header": doc["secret_header"],
            "sev-secret": doc["secret"]}, 0)
    except Exception as exc:  # noqa: BLE001 - libvirt errors vary
        raise AttestationError("sev_injection_failed",
                               f"libvirt could not inject the secret: "
                               f"{exc}") from None
