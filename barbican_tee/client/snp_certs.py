"""The SEV-SNP certificate table that comes with an extended report.

When the host supplies certificates (SNP_GET_EXT_REPORT, configfs-tsm
``auxblob``), they arrive in the format of the GHCB specification
(AMD 56421, "SNP Extended Guest Request"): a table of entries, each a
16-byte GUID, a little-endian u32 offset and a little-endian u32 length,
terminated by an all-zero entry; offsets count from the start of the
blob. The certificates themselves are DER.

GUIDs are stored in RFC 4122 byte order, as AMD's tools write them
(libuuid ``uuid_parse``) and as go-sev-guest reads them.
"""

from __future__ import annotations

import struct
import uuid

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")

#: Names of the certificates this module knows, keyed by GUID.
KNOWN_GUIDS: dict[uuid.UUID, str] = {
    GUID_VCEK: "vcek",
    GUID_VLEK: "vlek",
    GUID_ASK: "ask",
    GUID_ARK: "ark",
}

_ENTRY = struct.Struct("<16sII")
ENTRY_SIZE = _ENTRY.size  # 24
_TERMINATOR = b"\x00" * ENTRY_SIZE
#: More entries than this is not a certificate table.
MAX_ENTRIES = 64


class CertTableError(Exception):
    """The certificate table cannot be used; ``code`` is stable."""

    code = "snp_cert_table_malformed"

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])


def _der_length(blob: bytes, what: str) -> int:
    """Length of the DER SEQUENCE at the start of ``blob`` (with header).

    Hosts may pad each certificate; the padding is cut off here.
    """
    if len(blob) < 2 or blob[0] != 0x30:
        raise CertTableError(f"the {what} certificate is not DER "
                             "(no SEQUENCE at its offset)")
    first = blob[1]
    if first < 0x80:
        total = 2 + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(blob) < 2 + count:
            raise CertTableError(f"the {what} certificate has a bad DER "
                                 "length")
        total = 2 + count + int.from_bytes(blob[2:2 + count], "big")
    if total > len(blob):
        raise CertTableError(f"the {what} certificate's DER runs past its "
                             f"table entry ({total} > {len(blob)} bytes)")
    return total


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """Certificates of a GHCB certificate table, as DER, by name.

    Known GUIDs map to ``"vcek"``, ``"vlek"``, ``"ask"`` and ``"ark"``;
    other entries (a CRL, a vendor's own) are kept under their GUID string.
    Entries of length zero are skipped. Raises :class:`CertTableError`
    for anything that does not fit: no terminator, an entry pointing
    outside the blob or into the table itself, a duplicate GUID, a
    certificate that is not DER.
    """
    view = bytes(data)
    certs: dict[str, bytes] = {}
    entries: list[tuple[uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + ENTRY_SIZE > len(view):
            raise CertTableError(
                f"certificate table is truncated: entry {len(entries)} at "
                f"byte {pos} needs {ENTRY_SIZE} bytes, the blob has "
                f"{len(view)} (no all-zero terminator)")
        raw = view[pos:pos + ENTRY_SIZE]
        pos += ENTRY_SIZE
        if raw == _TERMINATOR:
            break
        if len(entries) >= MAX_ENTRIES:
            raise CertTableError(
                f"certificate table has more than {MAX_ENTRIES} entries")
        guid_raw, offset, length = _ENTRY.unpack(raw)
        entries.append((uuid.UUID(bytes=guid_raw), offset, length))
    table_end = pos
    for guid, offset, length in entries:
        name = KNOWN_GUIDS.get(guid, str(guid))
        if length == 0:
            continue
        if offset < table_end:
            raise CertTableError(
                f"the {name} entry points into the table itself "
                f"(offset {offset} < {table_end})")
        if offset + length > len(view):
            raise CertTableError(
                f"the {name} entry runs past the end of the blob "
                f"(offset {offset} + length {length} > {len(view)})")
        if name in certs:
            raise CertTableError(f"the {name} certificate appears twice")
        blob = view[offset:offset + length]
        certs[name] = blob[:_der_length(blob, name)]
    return certs


def build_cert_table(certs: dict[uuid.UUID, bytes]) -> bytes:
    """Lay certificates out as a GHCB certificate table (the host side).

    Used by tests and the demo's software model; the guest only parses.
    """
    header = ENTRY_SIZE * (len(certs) + 1)
    table = b""
    body = b""
    for guid, der in certs.items():
        table += _ENTRY.pack(guid.bytes, header + len(body), len(der))
        body += der
    return table + _TERMINATOR + body
