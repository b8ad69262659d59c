"""Nova 34.0.0's own functional harness with our driver, filter, weigher.

In-process Nova API (through a paste file with our extra-spec filter),
placement, scheduler, conductor and compute with Nova's libvirt fixture;
the compute driver is loaded by name through the ``libvirt_tee`` shim, as
an operator's nova.conf would. The secure processor behind each host is
the software model (openstack_tee_demo/sp_model), which answers the
firmware status ioctl.
"""

from __future__ import annotations

from collections.abc import Callable
import copy
import os
import sys
from typing import Any
from unittest import mock
import warnings

import fixtures
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import driver as nova_driver
from nova.virt.libvirt import host as nova_host
from oslo_utils.fixture import uuidsentinel as uuids
from oslo_utils import versionutils
from sqlalchemy import exc as sa_exc

from barbican_tee.attestation import snp_certs
from nova_tee.api import middleware
from nova_tee.virt.libvirt import capabilities
from openstack_tee_demo.sp_model import snp as sp_model

IMAGES = {
    "amd-sev": uuids.tee_sev_image,
    "amd-sev-es": uuids.tee_sev_es_image,
    "amd-sev-snp": uuids.tee_snp_image,
    "intel-tdx": uuids.tee_tdx_image,
}


def sev_caps() -> Any:
    """Nova's fake domain capabilities of an SEV (not SNP) host."""
    return mock.patch.object(
        fakelibvirt.virConnect, "_domain_capability_features",
        new=fakelibvirt.virConnect.
        _domain_capability_features_with_launch_security_SEV)


def snp_caps() -> Any:
    """Nova's fake domain capabilities of an SEV-SNP host."""
    return mock.patch.object(
        fakelibvirt.virConnect, "_domain_capability_features",
        new=fakelibvirt.virConnect.
        _domain_capability_features_with_launch_security_SEV_SNP)


def _nova_paste_file() -> str:
    for candidate in (os.path.join(sys.prefix, "etc", "nova",
                                   "api-paste.ini"),):
        if os.path.exists(candidate):
            return candidate
    raise AssertionError("Nova's api-paste.ini is not installed under "
                         f"{sys.prefix}/etc/nova")


def use_tee_paste_config(test: Any) -> None:
    """Nova's API through its own api-paste.ini with our filters added.

    ``test`` is one of Nova's test cases, before its API starts: the file
    is written to a temporary directory of the test and named in
    ``[wsgi] api_paste_config``.
    """
    tmp = test.useFixture(fixtures.TempDir()).path
    with open(_nova_paste_file()) as f:
        text = middleware.add_to_paste_config(f.read())
    paste = os.path.join(tmp, "api-paste.ini")
    with open(paste, "w") as f:
        f.write(text)
    test.flags(api_paste_config=paste, group="wsgi")


class TEEServersTestBase(base.ServersTestBase):
    microversion = "latest"
    ADDITIONAL_FILTERS = ["TEEFilter"]

    def setUp(self) -> None:
        super().setUp()
        # Nova's harness turns warnings into errors; SQLAlchemy 2.1's
        # deprecation warnings would fail one API call (a known quirk).
        warnings.filterwarnings("ignore",
                                category=sa_exc.SADeprecationWarning)
        for model, image_id in IMAGES.items():
            image = copy.deepcopy(self.glance.image1)
            image["id"] = image_id
            props = image["properties"]
            props["hw_firmware_type"] = "uefi"
            props["hw_machine_type"] = "q35"
            if model in ("amd-sev-snp", "intel-tdx"):
                props["hw_firmware_stateless"] = "True"
            if model == "intel-tdx":
                props["hw_video_model"] = "none"
            self.glance.create(None, image)
        self.flags(cpu_mode="host-passthrough", group="libvirt")
        self.libvirt.amd_sev.sev = True
        self.libvirt.amd_sev.sev_es = False
        self.libvirt.amd_sev.sev_snp = True
        self.sp: dict[str, sp_model.SecureProcessor] = {}
        # Keep the exact XML every fake domain was defined with: the
        # fixture's XMLDesc() rebuilds only the parts it understands and
        # drops <launchSecurity>, which real libvirt returns.
        original = fakelibvirt.Domain.__init__
        original_desc = fakelibvirt.Domain.XMLDesc

        def xml_desc(dom: Any, flags: int) -> str:
            desc: str = original_desc(dom, flags)
            xml = getattr(dom, "tee_xml", "")
            start = xml.find("<launchSecurity")
            if start < 0 or "<launchSecurity" in desc:
                return desc
            end = xml.index("</launchSecurity>") + len("</launchSecurity>")
            return desc.replace("</domain>", xml[start:end] + "</domain>")


        def init(dom: Any, connection: Any, xml: str, running: bool = False,
                 transient: bool = False) -> None:
            original(dom, connection, xml, running=running,
                     transient=transient)
            dom.tee_xml = xml

        self.useFixture(fixtures.MonkeyPatch(
            "nova.tests.fixtures.libvirt.Domain.__init__", init))
        self.useFixture(fixtures.MonkeyPatch(
            "nova.tests.fixtures.libvirt.Domain.XMLDesc", xml_desc))

    def _setup_services(self) -> None:
        # Nova's API through a paste file that carries our filter.
        use_tee_paste_config(self)
        super()._setup_services()

    def _setup_compute_service(self) -> None:
        self.flags(compute_driver="libvirt_tee.TEELibvirtDriver")

    def _setup_scheduler_service(self) -> Any:
        self.flags(available_filters=[
            "nova.scheduler.filters.all_filters",
            "nova_tee.scheduler.TEEFilter"], group="filter_scheduler")
        self.flags(weight_classes=[
            "nova.scheduler.weights.all_weighers",
            "nova_tee.scheduler.TEEWeigher"], group="filter_scheduler")
        return super()._setup_scheduler_service()

    # -- hosts -------------------------------------------------------------
    def start_tee_compute(self, hostname: str,
                          sp: sp_model.SecureProcessor | None = None) -> str:
        """An SEV/SNP host whose secure processor is the software model."""
        sp = sp or sp_model.SecureProcessor(label="nova-functional")
        self.sp[hostname] = sp
        with snp_caps():
            self.start_compute(
                hostname=hostname,
                libvirt_version=versionutils.convert_version_to_int(
                    nova_driver.MIN_LIBVIRT_STATELESS_FIRMWARE),
                qemu_version=versionutils.convert_version_to_int(
                    nova_host.MIN_QEMU_SEV_ES_VERSION))
        driver = self.computes[hostname].driver
        status = capabilities.parse_snp_status(sp.snp_platform_status())
        driver._tee_firmware_reader = lambda: status
        driver._tee_product_reader = (
            lambda: snp_certs.Product.from_name(sp.product))
        self._refresh(hostname)
        return hostname

    def start_sev_compute(self, hostname: str,
                          firmware: bytes | None = None) -> str:
        """An SEV host; ``firmware`` is the OVMF its model measures."""
        with sev_caps():
            self.start_compute(
                hostname=hostname,
                qemu_version=versionutils.convert_version_to_int(
                    nova_host.MIN_QEMU_SEV_ES_VERSION))
        if firmware is not None:
            conn = self.computes[hostname].driver._host.get_connection()
            conn.tee_firmware = firmware
        return hostname

    def _refresh(self, hostname: str) -> None:
        # Re-run the resource tracker so the host's stats are reported.
        self._run_periodics()

    # -- flavors and servers ------------------------------------------------
    def tee_flavor(self, model: str, **tee: str) -> str:
        extra = {"hw:mem_encryption": "true",
                 "hw:mem_encryption_model": model}
        extra.update({f"tee:{k}": v for k, v in tee.items()})
        return str(self._create_flavor(extra_spec=extra))

    def boot_on(self, host: str, image: str, flavor: str, secret_id: str,
                expected: str, caps: Callable[[], Any]) -> dict[str, Any]:
        """Boot a guest holding ``secret_id`` on ``host``, to ``expected``.

        ``caps`` is the host's fake domain capabilities (:func:`sev_caps`,
        :func:`snp_caps`).
        """
        body = self._build_server(image_uuid=image, flavor_id=flavor,
                                  networks="none")
        body["metadata"] = {"tee_secret": secret_id}
        body["host"] = host
        # Asking for a host is an administrator's right (2.74).
        api = self.admin_api
        api.microversion = "2.74"
        with caps():
            return self._wait_for_state_change(
                api.post_server({"server": body}), expected)

    def domain(self, server: dict[str, Any]) -> Any:
        """The fake libvirt domain of ``server`` on its current host."""
        hostname = server["OS-EXT-SRV-ATTR:host"]
        conn = self.computes[hostname].driver._host.get_connection()
        return conn.lookupByUUIDString(server["id"])

    def domain_xml(self, server: dict[str, Any]) -> str:
        """The XML the domain was defined with (``<launchSecurity>`` too)."""
        xml: str = self.domain(server).tee_xml
        return xml
