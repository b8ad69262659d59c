"""The SEV secure-processor model behind Nova's libvirt fixture.

Nova's fake libvirt has no node SEV info, no launch measurement and no
secret injection, and starts domains running even when asked to start
them paused. This fixture adds those to every fake connection and domain,
computed by the software model of the AMD secure processor
(openstack_tee_demo/sp_model/sev.py): the launch digest is SHA-256 of
the host's firmware bytes (``connection.tee_firmware``), the measurement is the
firmware's HMAC with the TIK unwrapped from the domain's own
``<dhCert>``/``<session>``, and an injected packet is checked and
decrypted as the firmware would.
"""

from __future__ import annotations

import base64
from typing import Any
import uuid

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt

from openstack_tee_demo.sp_model import sev as sp_sev

DEFAULT_FIRMWARE = b"OVMF.fd of the cloud" * 512
# The GUID under which an SEV guest's firmware finds an injected disk key.
LUKS_KEY_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")


class SEVModelFixture(fixtures.Fixture):

    def __init__(self, platform: sp_sev.SevPlatform) -> None:
        super().__init__()
        self.platform = platform
        # Every domain started, by instance UUID, kept after undefine.
        self.started: dict[str, list[Any]] = {}

    def _setUp(self) -> None:
        platform = self.platform
        original_create = fakelibvirt.Domain.createWithFlags
        original_resume = fakelibvirt.Domain.resume
        original_destroy = fakelibvirt.Domain.destroy

        def events(dom: Any) -> list[str]:
            if not hasattr(dom, "tee_events"):
                dom.tee_events = []
            return dom.tee_events  # type: ignore[no-any-return]

        def get_sev_info(conn: Any, flags: int = 0) -> dict[str, Any]:
            chain = platform.pek + platform.oca + platform.cek
            return {"pdh": base64.b64encode(platform.pdh).decode(),
                    "cert-chain": base64.b64encode(chain).decode(),
                    "cbitpos": 51, "reduced-phys-bits": 1}

        def create(dom: Any, flags: int) -> None:
            original_create(dom, flags)
            self.started.setdefault(dom.UUIDString(), []).append(dom)
            if flags & fakelibvirt.VIR_DOMAIN_START_PAUSED:
                dom._state = fakelibvirt.VIR_DOMAIN_PAUSED
                events(dom).append("started-paused")
            else:
                events(dom).append("started")

        def resume(dom: Any) -> None:
            events(dom).append("resumed")
            original_resume(dom)

        def destroy(dom: Any) -> None:
            events(dom).append("destroyed")
            original_destroy(dom)

        def launch_info(dom: Any, flags: int = 0) -> dict[str, Any]:
            ls = etree.fromstring(dom.tee_xml).find("launchSecurity")
            policy = int(ls.findtext("policy"), 16)
            launch = platform.launch_start(
                base64.b64decode(ls.findtext("dhCert")),
                base64.b64decode(ls.findtext("session")), policy)
            firmware = getattr(dom._connection, "tee_firmware",
                               DEFAULT_FIRMWARE)
            launch.launch_update_data(firmware)
            measurement = launch.launch_measure()
            dom.tee_launch = launch
            major, minor = platform.api
            return {"sev-measurement": base64.b64encode(
                        measurement).decode(),
                    "sev-api-major": major, "sev-api-minor": minor,
                    "sev-build-id": platform.build_id,
                    "sev-policy": policy}

        def set_state(dom: Any, params: dict[str, Any],
                      flags: int = 0) -> None:
            dom.tee_injected = dom.tee_launch.launch_secret(
                base64.b64decode(params["sev-secret-header"]),
                base64.b64decode(params["sev-secret"]))
            events(dom).append("secret-injected")

        for name, fn in (("createWithFlags", create), ("resume", resume),
                         ("destroy", destroy),
                         ("launchSecurityInfo", launch_info),
                         ("setLaunchSecurityState", set_state)):
            self.useFixture(fixtures.MonkeyPatch(
                f"nova.tests.fixtures.libvirt.Domain.{name}", fn))
        self.useFixture(fixtures.MonkeyPatch(
            "nova.tests.fixtures.libvirt.Connection.getSEVInfo",
            get_sev_info))
