"""Publishing this host's VCEK to Barbican's endorsement cache.

With ``[tee] vcek_path`` (the VCEK the operator installs for the host's
chip and current TCB, DER or PEM, optionally followed by its ASK/ARK, as
``snphost`` fetches it from AMD's KDS), nova-compute imports it into
Barbican's endorsement cache (``POST /v1/tee/endorsements``, as its
service user) when it starts and whenever the file changes (checked with
each resource update). Guests on the host then need not send their VCEK.

The host adds no trust: Barbican verifies the VCEK against its pinned AMD
roots on import and on every use. A failure is logged and retried at the
next resource update; it never stops nova-compute.
"""

from __future__ import annotations

import hashlib
import threading

from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.client import bundle
from barbican_tee.client import rest
from nova_tee import conf as tee_conf
from nova_tee.virt.libvirt import attest

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
tee_conf.register_opts(CONF)

# What a host publishes: its own endorsement key and chain, never CRLs.
_KINDS = ("vcek", "ask", "asvk", "ark")
_lock = threading.Lock()
_published: bytes | None = None


def publish_vcek() -> bool:
    """Import the file's VCEK if it changed since the last import."""
    global _published
    path = CONF.tee.vcek_path
    if not path or not CONF.tee.barbican_url:
        return False
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024)
    except OSError as exc:
        LOG.warning("openstack-tee: cannot read [tee] vcek_path %s: %s",
                    path, exc.strerror)
        return False
    digest = hashlib.sha256(data).digest()
    with _lock:
        if digest == _published:
            return False
    try:
        items = [i for i in bundle.items_from_bytes(data, path)
                 if i.get("kind") in _KINDS]
    except (bundle.BundleError, ValueError) as exc:
        LOG.warning("openstack-tee: [tee] vcek_path: %s", exc)
        return False
    if not any(i["kind"] == "vcek" for i in items):
        LOG.warning("openstack-tee: [tee] vcek_path %s holds no VCEK", path)
        return False
    try:
        entries = attest.client().import_endorsements(
            {"version": 1, "endorsements": items})
    except (rest.TEEClientError, attest.AttestationError) as exc:
        LOG.warning("openstack-tee: publishing this host's VCEK to the "
                    "endorsement cache failed (retried at the next resource "
                    "update): %s", exc)
        return False
    with _lock:
        _published = digest
    for entry in entries:
        if entry.get("kind") == "vcek":
            LOG.info("openstack-tee: this host's VCEK (%s, until %s) is in "
                     "the endorsement cache", entry.get("subject"),
                     entry.get("expires_at"))
    return True


_running = threading.Event()


def _publish_quietly() -> None:
    try:
        publish_vcek()
    except Exception:  # noqa: BLE001 - never stop nova-compute for it
        LOG.exception("openstack-tee: publishing the VCEK failed")
    finally:
        _running.clear()


def publish_in_background() -> None:
    """:func:`publish_vcek` for the driver's hooks, in its own thread.

    A slow or unreachable Barbican never holds up the resource tracker;
    one publication at a time.
    """
    if not CONF.tee.vcek_path or _running.is_set():
        return
    _running.set()
    threading.Thread(target=_publish_quietly, name="tee-vcek-publish",
                     daemon=True).start()
