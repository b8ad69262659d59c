"""``<launchSecurity>`` elements with every field libvirt 12.8 knows.

Upstream's config classes write only the policy (and SNP's three yes/no
attributes). These write what attestation needs as well: SEV ``dhCert`` and
``session`` for pre-attestation, SNP ``hostData``/``idBlock``/``idAuth``,
TDX ``mrConfigId``/``mrOwner``/``mrOwnerConfig``. Byte values are base64, as
libvirt's schema expects; their sizes are checked where they are set.
"""

from __future__ import annotations

import base64
from typing import Any

from lxml import etree
from nova.virt.libvirt import config as vconfig

SNP_HOST_DATA_SIZE = 32
SNP_ID_BLOCK_SIZE = 96
SNP_ID_AUTH_SIZE = 4096
TDX_MEASUREMENT_SIZE = 48


class NeedsNova34(vconfig.LibvirtConfigObject):
    """Stands in for a launch security class Nova 33 does not have.

    Nova 33 (2026.1) has neither SEV-SNP nor TDX launch security. The
    driver refuses such guests before it builds their XML; this is the
    last line, should anything try anyway.
    """

    def __init__(self, **kwargs: object) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} needs Nova 34 (2026.2) or later: this "
            "Nova's libvirt driver has no such launch security")


# Upstream's base classes; Nova 33 lacks the SNP and TDX ones.
_SNP_BASE: Any = getattr(vconfig, "LibvirtConfigGuestSEVSNPLaunchSecurity",
                    NeedsNova34)
_TDX_BASE: Any = getattr(vconfig, "LibvirtConfigGuestTDXLaunchSecurity",
                    NeedsNova34)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _child(root: etree._Element, tag: str, text: str) -> None:
    element = etree.Element(tag)
    element.text = text
    root.append(element)


class SEVLaunchSecurity(vconfig.LibvirtConfigGuestSEVLaunchSecurity):
    """SEV and SEV-ES, with the guest owner's session when attested."""

    def __init__(self, policy: int, dh_cert: str | None = None,
                 session: str | None = None,
                 kernel_hashes: bool = False,
                 upstream: object = None) -> None:
        super().__init__()
        # Nova 33 writes the C-bit position and reduced physical address
        # bits it found in the domain capabilities; keep what upstream's
        # own element for this guest carried.
        for name in ("cbitpos", "reduced_phys_bits"):
            if hasattr(upstream, name):
                setattr(self, name, getattr(upstream, name))
        self.policy = policy
        self.dh_cert = dh_cert
        self.session = session
        self.kernel_hashes = kernel_hashes

    def format_dom(self) -> etree._Element:
        root = super().format_dom()
        # Nova 33 writes cbitpos and reducedPhysBits even when it has no
        # value for them; libvirt fills in what is left out.
        for tag in ("cbitpos", "reducedPhysBits"):
            for element in root.findall(tag):
                if element.text in (None, "", "None"):
                    root.remove(element)
        if self.kernel_hashes:
            root.set("kernelHashes", "yes")
        if self.dh_cert:
            _child(root, "dhCert", self.dh_cert)
        if self.session:
            _child(root, "session", self.session)
        return root


class SEVSNPLaunchSecurity(_SNP_BASE):
    """SEV-SNP with the host data binding and optional ID block."""

    def __init__(self, policy: int, host_data: bytes,
                 id_block: bytes | None = None,
                 id_auth: bytes | None = None,
                 kernel_hashes: bool = False) -> None:
        super().__init__()
        if len(host_data) != SNP_HOST_DATA_SIZE:
            raise ValueError("SNP host data must be 32 bytes")
        if (id_block is None) != (id_auth is None):
            raise ValueError("an SNP ID block needs its ID auth and back")
        if id_block is not None and len(id_block) != SNP_ID_BLOCK_SIZE:
            raise ValueError("an SNP ID block must be 96 bytes")
        if id_auth is not None and len(id_auth) != SNP_ID_AUTH_SIZE:
            raise ValueError("SNP ID auth information must be 4096 bytes")
        self.policy = policy
        self.host_data = host_data
        self.id_block = id_block
        self.id_auth = id_auth
        self.kernelHashes = kernel_hashes
        # ID_AUTH_INFO's AUTH_KEY_ALGO (offset 4) is non-zero when it also
        # carries an author key; libvirt must then say authorKey='yes'.
        self.authorKey = bool(
            id_auth and int.from_bytes(id_auth[4:8], "little"))

    def format_dom(self) -> etree._Element:
        root = super().format_dom()
        if self.id_block is not None and self.id_auth is not None:
            _child(root, "idBlock", _b64(self.id_block))
            _child(root, "idAuth", _b64(self.id_auth))
        _child(root, "hostData", _b64(self.host_data))
        return root


class TDXLaunchSecurity(_TDX_BASE):
    """Intel TDX with owner-supplied MRCONFIGID, MROWNER, MROWNERCONFIG."""

    # TD attributes: SEPT_VE_DISABLE (bit 28), DEBUG (bit 0).
    SEPT_VE_DISABLE = 1 << 28
    DEBUG = 1

    def __init__(self, debug: bool = False,
                 mr_config_id: bytes | None = None,
                 mr_owner: bytes | None = None,
                 mr_owner_config: bytes | None = None) -> None:
        super().__init__()
        for name, value in (("mrConfigId", mr_config_id),
                            ("mrOwner", mr_owner),
                            ("mrOwnerConfig", mr_owner_config)):
            if value is not None and len(value) != TDX_MEASUREMENT_SIZE:
                raise ValueError(f"TDX {name} must be 48 bytes")
        self.policy = self.SEPT_VE_DISABLE | (self.DEBUG if debug else 0)
        self.mr_config_id = mr_config_id
        self.mr_owner = mr_owner
        self.mr_owner_config = mr_owner_config

    def format_dom(self) -> etree._Element:
        root = etree.Element("launchSecurity", type="tdx")
        _child(root, "policy", f"0x{self.policy:08x}")
        for tag, value in (("mrConfigId", self.mr_config_id),
                           ("mrOwner", self.mr_owner),
                           ("mrOwnerConfig", self.mr_owner_config)):
            if value is not None:
                _child(root, tag, _b64(value))
        root.append(etree.Element("quoteGenerationService"))
        return root
