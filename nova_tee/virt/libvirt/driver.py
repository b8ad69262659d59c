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
import dataclasses
import hashlib
from typing import Any
from unittest import mock

from lxml import etree
from nova.compute import task_states
from nova.compute import vm_states
from nova import exception
from nova.objects import fields
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import host as libvirt_host
from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.attestation import snp_certs
from barbican_tee.attestation import tcb_trait
from nova_tee import specs
from nova_tee.virt.libvirt import attest
from nova_tee.virt.libvirt import capabilities
from nova_tee.virt.libvirt import config as tee_config
from nova_tee.virt.libvirt import endorse

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

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


def refuse_unbindable(model: str, metadata: Mapping[str, str]) -> None:
    """Fault a guest whose secret could never be released to it.

    A TDX secret is released only to a TD whose MRCONFIGID names its
    instance (:func:`tdx_config_id`); an owner's own ``tee_mr_config_id``
    replaces that, so every release would answer ``instance_mismatch``.
    Refused before anything is bound.
    """
    if model == specs.TDX and "tee_mr_config_id" in metadata and (
            metadata.get(attest.META_SECRET)):
        raise _fault(f"tee_mr_config_id and {attest.META_SECRET} cannot be "
                     "used together: the secret is released only to a TD "
                     "whose MRCONFIGID binds this instance")


def refuse_passthrough(guest: Any) -> None:
    """Fault a confidential guest that has host devices assigned.

    PCI and mediated devices, and SR-IOV ports (``vnic_type=direct``
    and the like), which Nova writes as ``<interface type="hostdev">``.
    """
    if any(isinstance(d, vconfig.LibvirtConfigGuestHostdev)
           or (isinstance(d, vconfig.LibvirtConfigGuestInterface)
               and d.net_type == "hostdev")
           for d in guest.devices):
        raise _fault("a confidential guest cannot have PCI passthrough, "
                     "mediated devices or SR-IOV ports: their DMA bypasses "
                     "memory encryption and the device is outside the TEE")


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


def _nova_release() -> tuple[str, int]:
    """The installed Nova's version and its major (series) number."""
    from importlib import metadata

    try:
        version = metadata.version("nova")
    except metadata.PackageNotFoundError:
        return "unknown", 0
    major = version.split(".", 1)[0]
    return version, int(major) if major.isdigit() else 0


NOVA_VERSION, NOVA_MAJOR = _nova_release()
# The Nova releases this driver is made for: 33 (2026.1, the SLURP release
# operators upgrade from) and 34 (2026.2). A later release is checked
# against 34's hooks; anything that moved there is named at startup.
SUPPORTED = {33: "2026.1", 34: "2026.2"}
# Nova 33 has no SEV-SNP and no TDX (no such MemEncryptionModel, host
# detection, inventory or launch security); SEV and SEV-ES it has.
SNP_TDX = NOVA_MAJOR >= 34
NEEDS_NOVA_34 = (specs.SEV_SNP, specs.TDX)

# Upstream's private hooks this driver overrides or calls, with the
# parameter names (self included) each supported Nova gives them. A rename
# or a changed signature would otherwise switch attestation off silently
# while guests still boot; init_host refuses to start instead (see
# check_hooks).
_COMMON_HOOKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("LibvirtDriver", "_create_guest"): (
        "self", "context", "xml", "instance", "power_on", "pause",
        "post_xml_callback"),
    ("LibvirtDriver", "_get_guest_config"): (
        "self", "instance", "network_info", "image_meta", "disk_info",
        "rescue", "block_device_info", "context", "mdevs", "accel_info",
        "share_info", "old_guest"),
    ("LibvirtDriver", "_get_guest_xml"): (
        "self", "context", "instance", "network_info", "disk_info",
        "image_meta", "rescue", "block_device_info", "mdevs", "accel_info",
        "share_info", "old_guest"),
    ("LibvirtDriver", "cleanup"): (
        "self", "context", "instance", "network_info", "block_device_info",
        "destroy_disks", "migrate_data", "destroy_vifs", "destroy_secrets"),
    ("LibvirtDriver", "update_provider_tree"): (
        "self", "provider_tree", "nodename", "allocations"),
    ("Host", "_kernel_supports_amd_sev"): (
        "self", "model"),
}
HOOKS_BY_RELEASE: dict[int, dict[tuple[str, str], tuple[str, ...]]] = {
    34: {
        # Overridden: sets our launch security for every model.
        ("LibvirtDriver", "_guest_configure_mem_encryption"): (
            "self", "instance", "guest", "model"),
        **_COMMON_HOOKS,
        ("Host", "get_mem_encryption_inventories"): (
            "self",),
    },
    33: {
        # Not overridden (it has no instance argument there): our launch
        # security replaces upstream's in _get_guest_config, for the model
        # upstream's _get_mem_encryption_config chose.
        ("LibvirtDriver", "_get_mem_encryption_config"): (
            "self", "flavor", "image_meta"),
        **_COMMON_HOOKS,
        ("LibvirtDriver", "_get_memory_encryption_inventories"): (
            "self",),
    },
}
HOOKS: dict[tuple[str, str], tuple[str, ...]] = HOOKS_BY_RELEASE.get(
    min(NOVA_MAJOR, 34), {})


class UnsupportedNova(exception.NovaException):
    msg_fmt = ("openstack-tee cannot run on this Nova: %(reason)s. "
               "TEELibvirtDriver supports Nova 33 (2026.1) and Nova 34 "
               "(2026.2); install the openstack-tee release made for this "
               "Nova, or set compute_driver = libvirt.LibvirtDriver.")


# The classes the hooks belong to, as imported with this module (before
# any test replaces a name in Nova's modules).
OWNERS: dict[str, type] = {"LibvirtDriver": libvirt_driver.LibvirtDriver,
                           "Host": libvirt_host.Host}


def hook_problems(
        hooks: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
        owners: Mapping[str, type] | None = None,
) -> list[str]:
    """What is missing or changed among the upstream hooks we rely on."""
    import inspect

    problems = []
    if hooks is None and not HOOKS:
        problems.append(f"Nova {NOVA_VERSION} is not a supported release")
    for (owner, name), expected in (HOOKS if hooks is None
                                    else hooks).items():
        what = f"{owner}.{name}"
        func = getattr((OWNERS if owners is None else owners)[owner], name,
                       None)
        if func is None:
            problems.append(f"{what} does not exist")
            continue
        if isinstance(func, mock.NonCallableMock):
            # A test (Nova's functional base, a benchmark) patched the
            # hook before this module was first imported: there is no
            # upstream signature to check in that process.
            continue
        try:
            params = tuple(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            problems.append(f"{what} has no inspectable signature")
            continue
        if params != expected:
            problems.append(f"{what} takes ({', '.join(params)}), not "
                            f"({', '.join(expected)})")
    # The paused SEV guest's domain, for launch-secret injection.
    marker = object()
    if getattr(libvirt_guest.Guest(marker), "_domain", None) is not marker:
        problems.append("Guest._domain is not the libvirt domain")
    return problems


def check_hooks(problems: list[str] | None = None) -> None:
    """Raise UnsupportedNova naming every hook that is not as expected.

    By default the hooks as they were when this module was imported, that
    is when nova-compute loaded its driver.
    """
    problems = IMPORT_TIME_PROBLEMS if problems is None else problems
    if problems:
        raise UnsupportedNova(reason="; ".join(problems))


def needs_nova_34(model: str) -> str:
    """Why a ``model`` guest is refused on this Nova."""
    return (f"{model} guests need Nova 34 (2026.2) or later on the compute "
            f"host; this host runs Nova {NOVA_VERSION}")


def unavailable_on_this_nova() -> str:
    """What openstack-tee cannot offer on this Nova, and why ('' if all)."""
    if SNP_TDX:
        return ""
    return (f"Nova {NOVA_VERSION} ({SUPPORTED.get(NOVA_MAJOR, '?')}): AMD "
            "SEV and SEV-ES guests, with launch attestation, are "
            "available. Not available until this host runs Nova 34 "
            "(2026.2): AMD SEV-SNP guests (hostData binding, ID block, "
            "tee:min_tcb_*, tee.snp_tcb and CUSTOM_TEE_SNP_TCB_REPORTED) "
            "and Intel TDX guests (MRCONFIGID binding, owner measurements, "
            "CUSTOM_TEE_TDX_QUOTE_SERVICE), because this Nova cannot "
            "detect, schedule or launch them (its memory encryption models "
            "are amd-sev and amd-sev-es only, and its libvirt driver has "
            "no SEV-SNP or TDX launch security). This host does not offer "
            "them, so the scheduler places no such guest here; one that "
            "arrives anyway is refused.")


def _loaded(instance: Any, name: str) -> bool:
    """Whether reading ``instance.<name>`` needs no lazy load."""
    is_set = getattr(instance, "obj_attr_is_set", None)
    if is_set is None:
        return hasattr(instance, name)
    return bool(is_set(name))


def has_tee_request(instance: Any) -> bool:
    """Whether the instance's flavor carries any ``tee:`` extra spec.

    Only such guests get openstack-tee's launch security, binding and
    hardening; every other guest (plain upstream SEV/TDX included) is left
    exactly as upstream Nova makes it.
    """
    if not _loaded(instance, "flavor"):
        return False
    flavor = instance.flavor
    if flavor is None or not _loaded(flavor, "extra_specs"):
        return False
    extra_specs = flavor.extra_specs or {}
    try:
        return any(str(k).startswith(specs.PREFIX) for k in extra_specs)
    except TypeError:  # not a mapping (a mock)
        return False


class TEELibvirtDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver with attestation-aware launch and host reporting."""

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only=read_only)
        # How the secure processor's firmware status, the TDX module
        # version and the CPU's SNP product are read: from the host on real
        # hosts; tests and the demo plug software models in here. Private,
        # like every attribute upstream's driver does not have.
        self._tee_firmware_reader: Callable[
            [], capabilities.FirmwareStatus | None] = (
                capabilities.read_firmware_status)
        self._tee_tdx_module_reader: Callable[[], str | None] = (
            capabilities.read_tdx_module_version)
        self._tee_product_reader: Callable[
            [], snp_certs.Product | None] = capabilities.read_cpu_product
        # Launch sessions made while the XML was written, consumed when the
        # domain is created (same spawn/reboot call, same thread).
        self._tee_plans: dict[str, attest.LaunchPlan] = {}
        # The host probe of the last get_available_resource (one per
        # periodic task); update_provider_tree reuses it.
        self._tee_caps: capabilities.HostTEECapabilities | None = None

    def init_host(self, host: str) -> Any:
        check_hooks()
        if not SNP_TDX:
            # Once, at start: what this host will not offer, and why.
            LOG.warning("openstack-tee: %s", unavailable_on_this_nova())
        result = super().init_host(host)
        endorse.publish_in_background()
        return result

    # -- host ------------------------------------------------------------
    def _tee_mem_encryption_inventories(self) -> dict[str, Any]:
        """Upstream's verdict per model: ``{model_: {supported, total}}``."""
        if SNP_TDX:
            inventories: dict[str, Any] = (
                self._host.get_mem_encryption_inventories())
            return inventories
        # Nova 33: the driver's own SEV and SEV-ES inventories (total 0
        # when unsupported) and the host's verdict on each.
        totals = self._get_memory_encryption_inventories()
        supported = {"amd_sev": self._host.supports_amd_sev,
                     "amd_sev_es": self._host.supports_amd_sev_es}
        return {name: {"supported": bool(supported.get(name)),
                       "total": inv.get("total", 0)}
                for name, inv in totals.items()}

    def _tee_capabilities(self) -> capabilities.HostTEECapabilities:
        inventories = self._tee_mem_encryption_inventories()
        models, slots = [], {}
        for model in fields.MemEncryptionModel.ALL:
            inv = inventories.get(model.replace("-", "_"), {})
            if inv.get("supported"):
                models.append(model)
                slots[model] = int(inv.get("total") or 0)
        caps = capabilities.DomainCapsTEE()
        try:
            xml = self._host.get_connection().getDomainCapabilities(
                None, "x86_64", None, CONF.libvirt.virt_type, 0)
            caps = capabilities.parse_domain_caps(xml)
        except Exception:  # noqa: BLE001 - best effort detail only
            LOG.debug("openstack-tee: no domain capabilities",
                      exc_info=True)
        pdh = None
        if {"amd-sev", "amd-sev-es"} & set(models):
            pdh = capabilities.node_sev_pdh(
                lambda: self._host.get_connection().getSEVInfo(0))
        firmware = product = None
        if {"amd-sev", "amd-sev-es", "amd-sev-snp"} & set(models):
            firmware = self._tee_firmware_reader()
            product = self._tee_product_reader()
            if firmware is not None and not SNP_TDX:
                # No SNP guest can run here: no SNP TCB stat or trait, so
                # that no tee:min_tcb_* flavor is placed on this host.
                firmware = dataclasses.replace(
                    firmware, snp_current_tcb=None, snp_reported_tcb=None,
                    snp_mask_chip_id=None, snp_vlek=None)
        return capabilities.HostTEECapabilities(
            models=tuple(models), slots=slots, domain_caps=caps,
            kvm_params=self._kvm_amd_params(),
            firmware=firmware, sev_pdh=pdh,
            tdx_quote_service=self._tdx_quote_service_present(),
            product=product,
            tdx_module=(self._tee_tdx_module_reader()
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
        # The one host probe of this periodic task.
        caps = self._tee_caps = self._tee_capabilities()
        data.setdefault("stats", {}).update(
            caps.stats(self._tee_slots_used()))
        return data

    def update_provider_tree(self, provider_tree: Any, nodename: str,
                             allocations: Any = None) -> None:
        super().update_provider_tree(provider_tree, nodename,
                                     allocations=allocations)
        # As upstream does with its static traits: set what the host has,
        # remove what it lost, on the compute node's own provider.
        caps = self._tee_caps
        if caps is None:
            caps = self._tee_caps = self._tee_capabilities()
        states = caps.trait_states()
        provider_tree.add_traits(
            nodename, *sorted(t for t, on in states.items() if on))
        provider_tree.remove_traits(
            nodename, *sorted(t for t, on in states.items() if not on))
        # The host's SNP product and TCB (one trait, the value in its
        # name): set the current one, remove any other (older firmware).
        current = caps.snp_tcb_trait()
        stale = [t for t in provider_tree.data(nodename).traits
                 if tcb_trait.is_tcb_trait(t) and t != current]
        if stale:
            provider_tree.remove_traits(nodename, *sorted(stale))
        if current is not None:
            provider_tree.add_traits(nodename, current)
        # A VCEK file changed with the firmware: publish it.
        endorse.publish_in_background()

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

    if SNP_TDX:
        def _guest_configure_mem_encryption(self, instance: Any,
                                            guest: Any, model: str) -> None:
            # Nova 34's hook (Nova 33's has no instance, and is left as
            # upstream's: see _get_guest_config).
            if not has_tee_request(instance) or model not in (
                    fields.MemEncryptionModel.AMD_SEV,
                    fields.MemEncryptionModel.AMD_SEV_ES,
                    fields.MemEncryptionModel.AMD_SEV_SNP):
                super()._guest_configure_mem_encryption(instance, guest,
                                                        model)
            if has_tee_request(instance):
                self._tee_launch_security(instance, guest, model)

    def _tee_launch_security(self, instance: Any, guest: Any,
                             model: str) -> None:
        """Our ``<launchSecurity>`` for a guest with a ``tee:`` request."""
        if model in NEEDS_NOVA_34 and not SNP_TDX:
            raise _fault(needs_nova_34(model))
        request = self._tee_request(instance)
        metadata = dict(instance.metadata or {})
        kernel_hashes = bool(instance.kernel_id)
        refuse_unbindable(model, metadata)
        try:
            attest.bind(instance)
        except attest.AttestationError as exc:
            raise _fault(f"the secret cannot be bound to this instance: "
                         f"{exc}") from None
        if model == specs.SEV_SNP:
            id_block, id_auth = id_block_from_metadata(metadata)
            policy = request.policy if request else (
                specs.SNP_POLICY_SMT | specs.SNP_POLICY_RESERVED)
            guest.launch_security = tee_config.SEVSNPLaunchSecurity(
                policy=policy, host_data=host_data(instance.uuid),
                id_block=id_block, id_auth=id_auth,
                kernel_hashes=kernel_hashes)
        elif model in (specs.SEV, specs.SEV_ES):
            default = tee_config.SEVLaunchSecurity.DEFAULT_SEV_POLICY
            if model == specs.SEV_ES:
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
                kernel_hashes=kernel_hashes,
                upstream=guest.launch_security)
        elif model == specs.TDX:
            # Upstream's TDX loader settings are already made.
            owner = tdx_measurements_from_metadata(metadata)
            # MRCONFIGID binds the TD to this instance, as hostData does
            # for SNP, unless the owner supplies their own.
            owner.setdefault("mr_config_id", tdx_config_id(instance.uuid))
            guest.launch_security = tee_config.TDXLaunchSecurity(
                debug=bool(request and request.tdx_debug), **owner)

    def cleanup(self, context: Any, instance: Any, network_info: Any,
                block_device_info: Any = None, destroy_disks: bool = True,
                migrate_data: Any = None, destroy_vifs: bool = True,
                destroy_secrets: bool = True) -> Any:
        result = super().cleanup(
            context, instance, network_info,
            block_device_info=block_device_info,
            destroy_disks=destroy_disks, migrate_data=migrate_data,
            destroy_vifs=destroy_vifs, destroy_secrets=destroy_secrets)
        if self._tee_secret_to_retire(instance):
            # The instance is going away: so is its claim on the secret,
            # and a copy of its disk booted elsewhere must not inherit it.
            try:
                attest.retire(instance.uuid)
            except attest.AttestationError as exc:
                LOG.error("openstack-tee: could not retire the secret "
                          "binding of %s: %s", instance.uuid, exc)
        return result

    @staticmethod
    def _tee_secret_to_retire(instance: Any) -> bool:
        """An instance being deleted that was bound to a ``tee_secret``.

        Being deleted: a delete in progress (task ``deleting``), a
        soft-deleted instance reclaimed (``reclaim_instance_interval``:
        its state is ``soft-delete`` and its task none), or one deleted
        already whose domain is reaped (deleted at the API while its host
        was down). Not a shelve offload, evacuation or migration, whose
        instance lives on. Reads nothing that is not loaded already, and
        nothing at all of a guest whose flavor has no ``tee:`` request
        (only those are bound).
        """
        if _loaded(instance, "flavor") and instance.flavor is not None and (
                _loaded(instance.flavor, "extra_specs")
                and not has_tee_request(instance)):
            return False
        deleting = (_loaded(instance, "task_state")
                    and instance.task_state == task_states.DELETING)
        state = instance.vm_state if _loaded(instance, "vm_state") else None
        task = (instance.task_state if _loaded(instance, "task_state")
                else None)
        # Soft deleted: retired once reclaimed (no task), not while it is
        # restored (task restoring: its domain is made again, bound).
        gone = state == vm_states.DELETED or (
            state == vm_states.SOFT_DELETED and task is None) or (
            _loaded(instance, "deleted") and bool(instance.deleted))
        if not (deleting or gone):
            return False
        if _loaded(instance, "flavor") and instance.flavor is not None and (
                _loaded(instance.flavor, "extra_specs")):
            # A tee: guest: retired whatever its metadata says now (Barbican
            # answers 204 when nothing is bound to it).
            return True
        return _loaded(instance, "metadata") and bool(
            (instance.metadata or {}).get(attest.META_SECRET))

    def _node_sev_info(self) -> Any:
        return self._host.get_connection().getSEVInfo(0)

    def _create_guest(self, context: Any, xml: str, instance: Any,
                      power_on: bool = True, pause: bool = False,
                      post_xml_callback: Any = None) -> Any:
        if not has_tee_request(instance):
            return super()._create_guest(
                context, xml, instance, power_on=power_on, pause=pause,
                post_xml_callback=post_xml_callback)
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
        tee = has_tee_request(instance)
        if tee and not SNP_TDX:
            request = self._tee_request(instance)
            if request is not None and request.model in NEEDS_NOVA_34:
                # Never placed here by TEEFilter (this host does not offer
                # the model); refused if it arrives anyway.
                raise _fault(needs_nova_34(request.model))
        guest = super()._get_guest_config(instance, network_info,
                                          image_meta, disk_info, *args,
                                          **kwargs)
        if not tee:
            return guest
        if guest.launch_security is None:
            # A tee: request is never honoured by booting the guest
            # unencrypted and unattested.
            raise _fault("the flavor has tee: extra specs but this host "
                         "configured no memory encryption for the guest "
                         "(hw:mem_encryption not in effect here)")
        if not SNP_TDX:
            # Nova 33: upstream's SEV/SEV-ES element, replaced by ours for
            # the model upstream chose.
            me_config = self._get_mem_encryption_config(instance.flavor,
                                                         image_meta)
            self._tee_launch_security(instance, guest, me_config.model)
        refuse_passthrough(guest)
        return guest

    def _get_guest_xml(self, context: Any, instance: Any,
                       *args: Any, **kwargs: Any) -> str:
        xml: str = super()._get_guest_xml(context, instance, *args,
                                          **kwargs)
        if not isinstance(xml, str) or "<launchSecurity" not in xml or (
                not has_tee_request(instance)):
            return xml
        return harden_guest_xml(xml)


# Checked once, as nova-compute loads the driver; init_host refuses to
# start when anything is wrong.
IMPORT_TIME_PROBLEMS: list[str] = hook_problems()
