"""TEELibvirtDriver: upstream's libvirt driver, plus attestation.

Loaded by ``compute_driver = libvirt_tee.TEELibvirtDriver`` through the
one-file shim ``nova/virt/libvirt_tee``. Everything upstream does for
memory-encrypted guests (model detection, slots, traits, placement) stays
upstream's; this class adds:

* host capabilities as ``tee.*`` ComputeNode stats and ``CUSTOM_TEE_*``
  traits (see :mod:`nova_tee.stats`),
* a ``<launchSecurity>`` composed from the flavor's ``tee:`` keys, with the
  SNP ``hostData`` binding, and ``idBlock``/``idAuth`` or TDX
  ``mrConfigId``/``mrOwner``/``mrOwnerConfig`` from server metadata,
* hardening of confidential guests: every virtio device behind the IOMMU
  (``<driver iommu='on'/>``), no memory balloon, and no PCI passthrough or
  mediated devices.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from collections.abc import Mapping
import hashlib
from typing import Any

from lxml import etree
from nova.compute import task_states
from nova import exception
from nova.objects import fields
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from nova_tee import specs
from nova_tee.virt.libvirt import attest
from nova_tee.virt.libvirt import capabilities
from nova_tee.virt.libvirt import config as tee_config

LOG = logging.getLogger(__name__)

HOST_DATA_PREFIX = b"openstack-tee:v1:"

# Server metadata keys (base64 values). The 4096-byte SNP ID auth
# structure does not fit in one 255-character metadata value, so it is
# given in numbered parts: tee_id_auth_0, tee_id_auth_1, ...
META_ID_BLOCK = "tee_id_block"
META_ID_AUTH = "tee_id_auth"
META_TDX = {"tee_mr_config_id": "mr_config_id",
            "tee_mr_owner": "mr_owner",
            "tee_mr_owner_config": "mr_owner_config"}

_VIRTIO_DEVICE_TAGS = ("disk", "interface", "controller", "rng", "video",
                       "vsock", "input", "filesystem", "console")


def host_data(instance_uuid: str) -> bytes:
    """SNP hostData: SHA-256("openstack-tee:v1:" + instance uuid)."""
    return hashlib.sha256(HOST_DATA_PREFIX
                          + instance_uuid.encode("ascii")).digest()


def tdx_config_id(instance_uuid: str) -> bytes:
    """TDX MRCONFIGID binding: SHA-384("openstack-tee:v1:" + uuid)."""
    return hashlib.sha384(HOST_DATA_PREFIX
                          + instance_uuid.encode("ascii")).digest()


def _fault(reason: str) -> exception.InvalidInput:
    # InvalidInput aborts the build without rescheduling and becomes the
    # instance fault, which is where the user looks.
    return exception.InvalidInput(reason=f"openstack-tee: {reason}")


def _b64_meta(metadata: Mapping[str, str], key: str, size: int) -> bytes:
    try:
        value = base64.b64decode(metadata[key], validate=True)
    except (binascii.Error, ValueError):
        raise _fault(f"server metadata {key} is not base64") from None
    if len(value) != size:
        raise _fault(f"server metadata {key} must decode to {size} bytes, "
                     f"not {len(value)}")
    return value


def id_block_from_metadata(
        metadata: Mapping[str, str]) -> tuple[bytes | None, bytes | None]:
    """SNP ID block and ID auth from server metadata (both or neither)."""
    parts = sorted((k for k in metadata
                    if k.startswith(META_ID_AUTH + "_")),
                   key=lambda k: (len(k), k))
    has_block = META_ID_BLOCK in metadata
    if not has_block and not parts:
        return None, None
    if not has_block or not parts:
        raise _fault(f"{META_ID_BLOCK} and {META_ID_AUTH}_0, "
                     f"{META_ID_AUTH}_1, ... must be given together")
    expected = [f"{META_ID_AUTH}_{i}" for i in range(len(parts))]
    if parts != expected:
        raise _fault(f"{META_ID_AUTH} parts must be numbered from 0 without "
                     "gaps")
    joined = "".join(metadata[k] for k in parts)
    id_block = _b64_meta(metadata, META_ID_BLOCK,
                         tee_config.SNP_ID_BLOCK_SIZE)
    id_auth = _b64_meta({META_ID_AUTH: joined}, META_ID_AUTH,
                        tee_config.SNP_ID_AUTH_SIZE)
    return id_block, id_auth


def tdx_measurements_from_metadata(
        metadata: Mapping[str, str]) -> dict[str, bytes]:
    return {arg: _b64_meta(metadata, key,
                           tee_config.TDX_MEASUREMENT_SIZE)
            for key, arg in META_TDX.items() if key in metadata}


def refuse_passthrough(guest: Any) -> None:
    """Fault a confidential guest that has host devices assigned."""
    if any(isinstance(d, vconfig.LibvirtConfigGuestHostdev)
           for d in guest.devices):
        raise _fault("a confidential guest cannot have PCI passthrough or "
                     "mediated devices: their DMA bypasses memory "
                     "encryption and the device is outside the TEE")


def replace_sev_session(xml: str, dh_cert: str, session: str) -> str:
    """The domain XML with a new guest-owner session for SEV."""
    root = etree.fromstring(xml)
    ls = root.find("launchSecurity")
    if ls is None or ls.get("type") != "sev":
        raise _fault("the saved domain has no SEV launch security")
    for tag, value in (("dhCert", dh_cert), ("session", session)):
        element = ls.find(tag)
        if element is None:
            element = etree.SubElement(ls, tag)
        element.text = value
    out: str = etree.tostring(root, encoding="unicode")
    return out


def harden_guest_xml(xml: str) -> str:
    """Put every virtio device behind the IOMMU and drop the balloon."""
    root = etree.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        return xml
    # A balloon lets the host reclaim (and watch) guest pages; libvirt adds
    # one unless told model='none'.
    for balloon in devices.findall("memballoon"):
        devices.remove(balloon)
    devices.append(etree.Element("memballoon", model="none"))
    for device in devices:
        if device.tag not in _VIRTIO_DEVICE_TAGS:
            continue
        target = device.find("target")
        is_virtio = (
            "virtio" in (device.get("model") or "")
            or "virtio" in (device.get("bus") or "")
            or (device.find("model") is not None
                and "virtio" in (device.find("model").get("type") or ""))
            or (target is not None and target.get("bus") == "virtio")
            or (device.tag == "console" and target is not None
                and target.get("type") == "virtio")
            or device.tag == "vsock")
        if not is_virtio:
            continue
        driver = device.find("driver")
        if driver is None:
            driver = etree.Element("driver")
            # libvirt's schema wants <driver> before the device's address.
            address = device.find("address")
            if address is not None:
                address.addprevious(driver)
            else:
                device.append(driver)
        driver.set("iommu", "on")
    out: str = etree.tostring(root, encoding="unicode", pretty_print=True)
    return out


class TEELibvirtDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver with attestation-aware launch and host reporting."""

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only=read_only)
        # How the secure processor's firmware status is read: the /dev/sev
        # ioctl on real hosts; tests and the demo plug the software model
        # of the secure processor in here.
        self.firmware_reader: Callable[
            [], capabilities.FirmwareStatus | None] = (
                capabilities.read_firmware_status)
        self.tdx_module_reader: Callable[[], str | None] = (
            capabilities.read_tdx_module_version)
        # Launch sessions made while the XML was written, consumed when the
        # domain is created (same spawn/reboot call, same thread).
        self._tee_plans: dict[str, attest.LaunchPlan] = {}

    # -- host ------------------------------------------------------------
    def _tee_capabilities(self) -> capabilities.HostTEECapabilities:
        inventories = self._host.get_mem_encryption_inventories()
        models, slots = [], {}
        for model in fields.MemEncryptionModel.ALL:
            inv = inventories.get(model.replace("-", "_"), {})
            if inv.get("supported"):
                models.append(model)
                slots[model] = int(inv.get("total") or 0)
        caps = capabilities.DomainCapsTEE()
        try:
            xml = self._host.get_connection().getDomainCapabilities(
                None, "x86_64", None, "kvm", 0)
            caps = capabilities.parse_domain_caps(xml)
        except Exception:  # noqa: BLE001 - best effort detail only
            LOG.debug("openstack-tee: no domain capabilities",
                      exc_info=True)
        pdh = None
        if {"amd-sev", "amd-sev-es"} & set(models):
            pdh = capabilities.node_sev_pdh(
                lambda: self._host.get_connection().getSEVInfo(0))
        firmware = None
        if {"amd-sev", "amd-sev-es", "amd-sev-snp"} & set(models):
            firmware = self.firmware_reader()
        return capabilities.HostTEECapabilities(
            models=tuple(models), slots=slots, domain_caps=caps,
            kvm_params=self._kvm_amd_params(),
            firmware=firmware, sev_pdh=pdh,
            tdx_quote_service=self._tdx_quote_service_present(),
            tdx_module=(self.tdx_module_reader()
                        if "intel-tdx" in models else None))

    def _kvm_amd_params(self) -> dict[str, bool]:
        # Upstream's Host reads /sys/module/kvm_amd/parameters (and is what
        # decides model support); ask it rather than reading them twice.
        return {name: bool(self._host._kernel_supports_amd_sev(
                    model=name.replace("_", "-")))
                for name in ("sev", "sev_es", "sev_snp")}

    @staticmethod
    def _tdx_quote_service_present() -> bool:
        import os

        return os.path.exists(capabilities.TDX_QGS_SOCKET)

    def _tee_slots_used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for guest in self._host.list_guests(only_running=False):
            try:
                root = etree.fromstring(guest.get_xml_desc())
            except Exception:  # noqa: BLE001,S112 - a vanished domain
                continue
            ls = root.find("launchSecurity")
            if ls is None:
                continue
            kind = ls.get("type")
            policy = int(ls.findtext("policy") or "0", 16)
            if kind == "sev":
                model = "amd-sev-es" if policy & specs.SEV_POLICY_ES else (
                    "amd-sev")
            elif kind == "sev-snp":
                model = "amd-sev-snp"
            elif kind == "tdx":
                model = "intel-tdx"
            else:
                continue
            used[model] = used.get(model, 0) + 1
        return used

    def get_available_resource(self, nodename: str) -> dict[str, Any]:
        data: dict[str, Any] = super().get_available_resource(nodename)
        caps = self._tee_capabilities()
        data.setdefault("stats", {}).update(
            caps.stats(self._tee_slots_used()))
        return data

    def update_provider_tree(self, provider_tree: Any, nodename: str,
                             allocations: Any = None) -> None:
        super().update_provider_tree(provider_tree, nodename,
                                     allocations=allocations)
        traits = self._tee_capabilities().traits()
        if traits:
            provider_tree.add_traits(nodename, *sorted(traits))

    # -- guest -----------------------------------------------------------
    @staticmethod
    def _image_props(image_meta: Any) -> dict[str, Any]:
        props = getattr(image_meta, "properties", None)
        out = {}
        for name in ("hw_mem_encryption", "hw_mem_encryption_model"):
            value = props.get(name) if props is not None else None
            if value is not None:
                out[name] = value
        return out

    def _tee_request(self, instance: Any) -> specs.TEERequest | None:
        try:
            return specs.request_from(
                instance.flavor.extra_specs,
                self._image_props(instance.image_meta))
        except specs.SpecError as exc:
            raise _fault(str(exc)) from None

    def _guest_configure_mem_encryption(self, instance: Any, guest: Any,
                                        model: str) -> None:
        request = self._tee_request(instance)
        metadata = dict(instance.metadata or {})
        kernel_hashes = bool(instance.kernel_id)
        try:
            attest.bind(instance)
        except attest.AttestationError as exc:
            raise _fault(f"the secret cannot be bound to this instance: "
                         f"{exc}") from None
        if model == fields.MemEncryptionModel.AMD_SEV_SNP:
            id_block, id_auth = id_block_from_metadata(metadata)
            policy = request.policy if request else (
                specs.SNP_POLICY_SMT | specs.SNP_POLICY_RESERVED)
            guest.launch_security = tee_config.SEVSNPLaunchSecurity(
                policy=policy, host_data=host_data(instance.uuid),
                id_block=id_block, id_auth=id_auth,
                kernel_hashes=kernel_hashes)
        elif model in (fields.MemEncryptionModel.AMD_SEV,
                       fields.MemEncryptionModel.AMD_SEV_ES):
            default = tee_config.SEVLaunchSecurity.DEFAULT_SEV_POLICY
            if model == fields.MemEncryptionModel.AMD_SEV_ES:
                default = tee_config.SEVLaunchSecurity.DEFAULT_SEV_ES_POLICY
            policy = request.policy if request else default
            dh_cert = session = None
            if request is not None and request.attestation:
                # Pre-attestation: the guest owner's session goes into the
                # XML; the launch completes in _create_guest.
                try:
                    dh_cert, session, plan = attest.begin(
                        instance, policy, self._node_sev_info)
                except attest.AttestationError as exc:
                    raise _fault(f"SEV attestation refused: {exc}") from None
                self._tee_plans[instance.uuid] = plan
            guest.launch_security = tee_config.SEVLaunchSecurity(
                policy=policy, dh_cert=dh_cert, session=session,
                kernel_hashes=kernel_hashes)
        elif model == fields.MemEncryptionModel.INTEL_TDX:
            super()._guest_configure_mem_encryption(instance, guest, model)
            owner = tdx_measurements_from_metadata(metadata)
            # MRCONFIGID binds the TD to this instance, as hostData does
            # for SNP, unless the owner supplies their own.
            owner.setdefault("mr_config_id", tdx_config_id(instance.uuid))
            guest.launch_security = tee_config.TDXLaunchSecurity(
                debug=bool(request and request.tdx_debug), **owner)
        else:
            super()._guest_configure_mem_encryption(instance, guest, model)

    def cleanup(self, context: Any, instance: Any, network_info: Any,
                *args: Any, **kwargs: Any) -> Any:
        result = super().cleanup(context, instance, network_info, *args,
                                 **kwargs)
        if instance.task_state == task_states.DELETING and (
                (instance.metadata or {}).get(attest.META_SECRET)):
            # The instance is going away: so is its claim on the secret,
            # and a copy of its disk booted elsewhere must not inherit it.
            try:
                attest.retire(instance.uuid)
            except attest.AttestationError as exc:
                LOG.error("openstack-tee: could not retire the secret "
                          "binding of %s: %s", instance.uuid, exc)
        return result

    def _node_sev_info(self) -> Any:
        return self._host.get_connection().getSEVInfo(0)

    def _create_guest(self, context: Any, xml: str, instance: Any,
                      power_on: bool = True, pause: bool = False,
                      post_xml_callback: Any = None) -> Any:
        plan = self._tee_plans.pop(instance.uuid, None)
        if plan is None and "<dhCert>" in xml and (power_on or pause):
            # XML saved earlier (unrescue): its session was spent on the
            # previous launch, so open a new one.
            request = self._tee_request(instance)
            if request is not None and request.attestation:
                try:
                    attest.bind(instance)
                    dh_cert, session, plan = attest.begin(
                        instance, request.policy, self._node_sev_info)
                except attest.AttestationError as exc:
                    raise _fault(f"SEV attestation refused: {exc}") from None
                xml = replace_sev_session(xml, dh_cert, session)
        if plan is None or not (power_on or pause):
            return super()._create_guest(
                context, xml, instance, power_on=power_on, pause=pause,
                post_xml_callback=post_xml_callback)
        # Start paused, attest, inject, and only then let it run.
        guest = super()._create_guest(
            context, xml, instance, power_on=False, pause=True,
            post_xml_callback=post_xml_callback)
        try:
            attest.finish(guest._domain, plan)
        except attest.AttestationError as exc:
            LOG.error("openstack-tee: SEV attestation of %s failed: %s; "
                      "destroying the paused guest", instance.uuid,
                      exc.code)
            try:
                guest.poweroff()
            except Exception:  # noqa: BLE001 - already failing
                LOG.exception("openstack-tee: could not destroy %s",
                              instance.uuid)
            raise _fault(f"SEV attestation failed: {exc}") from None
        if power_on and not pause:
            guest.resume()
        return guest

    def _get_guest_config(self, instance: Any, network_info: Any,
                          image_meta: Any, disk_info: Any,
                          *args: Any, **kwargs: Any) -> Any:
        guest = super()._get_guest_config(instance, network_info,
                                          image_meta, disk_info, *args,
                                          **kwargs)
        if guest.launch_security is not None:
            refuse_passthrough(guest)
        return guest

    def _get_guest_xml(self, *args: Any, **kwargs: Any) -> str:
        xml: str = super()._get_guest_xml(*args, **kwargs)
        if "<launchSecurity" not in xml:
            return xml
        return harden_guest_xml(xml)
