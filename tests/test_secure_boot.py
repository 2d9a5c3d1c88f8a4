"""Secure Boot signatures checked at build time: trust anchors from the host, sbverify."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.runner import SubprocessRunner
from stages.secure_boot import (
    DEBIAN_CA,
    MICROSOFT_UEFI_CA,
    X509_GUID,
    ca_certificate,
    der_certificates,
    signature_list_certificates,
    trust_anchors,
    verify_signed,
)

SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
MOK = Path("/usr/lib/shim/mmx64.efi.signed")


def fake_cert(name: bytes, issuer: bytes, size: int = 600) -> bytes:
    body = b"\x30\x82" + (size - 8).to_bytes(2, "big") + issuer + name
    body += b"\0" * (size - 4 - len(body))
    return b"\x30\x82" + (size - 4).to_bytes(2, "big") + body


def signature_list(*certs: bytes) -> bytes:
    size = 16 + len(certs[0])
    entries = b"".join(b"\x11" * 16 + cert for cert in certs)
    return X509_GUID + struct.pack("<III", 28 + len(entries), 0, size) + entries


def test_ca_certificates_are_found_in_signature_lists_and_binaries() -> None:
    ca = fake_cert(MICROSOFT_UEFI_CA, b"Marketplace Root")
    signed_by_ca = fake_cert(b"Windows Driver Publisher", MICROSOFT_UEFI_CA)
    store = b"\xff" * 100 + signature_list(ca) + signature_list(signed_by_ca) + b"\xff" * 50
    assert signature_list_certificates(store) == [ca, signed_by_ca]
    assert ca_certificate(signature_list_certificates(store), MICROSOFT_UEFI_CA,
                          Path("vars")) in (ca, signed_by_ca)
    debian = fake_cert(DEBIAN_CA, DEBIAN_CA)
    binary = b"MZ" + b"\0" * 300 + debian + b"\0" * 300
    assert der_certificates(binary) == [debian]
    assert ca_certificate(der_certificates(binary), DEBIAN_CA, Path("shim")) == debian
    with pytest.raises(BuildError, match="no Debian Secure Boot CA certificate found in shim"):
        ca_certificate(der_certificates(b"MZ" + b"\0" * 900), DEBIAN_CA, Path("shim"))


@pytest.mark.tools
def test_debians_signed_boot_chain_verifies_and_a_tampered_grub_does_not(
        tmp_path: Path) -> None:
    if shutil.which("sbverify") is None or not SHIM.exists():
        pytest.skip("needs sbsigntool and shim-signed (make deps)")
    anchors = trust_anchors(SHIM)
    runner = SubprocessRunner(tmp_path / "log")
    verify_signed(runner, {"BOOTX64.EFI": SHIM, "grubx64.efi": GRUB, "mmx64.efi": MOK},
                  anchors, "host files")
    tampered = tmp_path / "grubx64.efi"
    data = bytearray(GRUB.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="grubx64.efi is not signed by Debian Secure Boot CA"):
        verify_signed(runner, {"grubx64.efi": tampered}, anchors, "the ESP files")
    # shim is not signed by Debian, GRUB not by Microsoft: the right CA is asked for
    with pytest.raises(BuildError, match="BOOTX64.EFI is not signed by Microsoft"):
        verify_signed(runner, {"BOOTX64.EFI": GRUB}, anchors, "the ESP files")
