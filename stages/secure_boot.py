"""Secure Boot checked at build time, not hoped for (a helper of the bootloader and usb
stages, not a stage).

The chain firmware -> shim -> GRUB / MokManager holds only if shim is signed by
Microsoft's UEFI CA (which firmware trusts) and GRUB and MokManager by Debian's Secure
Boot CA (which shim carries). Both CA certificates are read from what the host
already has: Microsoft's from the db of OVMF's Microsoft-enrolled variable store, Debian's
from shim's own vendor certificate. `sbverify` then checks each binary against its CA,
on the ESP files and again inside the FAT images the media carry.
"""

from __future__ import annotations

import base64
import struct
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.runner import Runner

OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
MICROSOFT_UEFI_CA = b"Microsoft Corporation UEFI CA 2011"
DEBIAN_CA = b"Debian Secure Boot CA"
# EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072, as stored (little-endian fields)
X509_GUID = bytes.fromhex("a159c0a5e494a74a87b5ab155c2bf072")
# Which CA signs which ESP file (EFI/BOOT/...).
SIGNERS = {"BOOTX64.EFI": MICROSOFT_UEFI_CA, "grubx64.efi": DEBIAN_CA,
           "mmx64.efi": DEBIAN_CA}


def der_certificates(blob: bytes) -> list[bytes]:
    """Every DER X.509 certificate in `blob`: the ones in EFI signature lists, and any
    other `SEQUENCE { SEQUENCE ...` of plausible length (shim's embedded certificate)."""
    found: list[bytes] = []
    start = 0
    while (index := blob.find(b"\x30\x82", start)) != -1:
        start = index + 1
        length = int.from_bytes(blob[index + 2:index + 4], "big") + 4
        if blob[index + 4:index + 6] != b"\x30\x82" or not 300 < length < 8192:
            continue
        inner = int.from_bytes(blob[index + 6:index + 8], "big") + 4
        if inner >= length or index + length > len(blob):
            continue
        found.append(blob[index:index + length])
    return found


def signature_list_certificates(blob: bytes) -> list[bytes]:
    """The X.509 certificates of the EFI_SIGNATURE_LISTs in a variable store."""
    certificates = []
    start = 0
    while (index := blob.find(X509_GUID, start)) != -1:
        start = index + 1
        list_size, header_size, signature_size = struct.unpack_from("<III", blob, index + 16)
        first = index + 28 + header_size
        end = index + list_size
        if signature_size <= 16 or end > len(blob):
            continue
        for offset in range(first, end, signature_size):
            certificates.append(blob[offset + 16:offset + signature_size])  # after owner GUID
    return certificates


def ca_certificate(candidates: list[bytes], name: bytes, where: Path) -> bytes:
    """The certificate whose subject is `name` (a CA names itself as subject and, if
    self-signed, issuer; certificates it signed name it once as issuer)."""
    matching = [c for c in candidates if name in c]
    self_named = [c for c in matching if c.count(name) >= 2] or matching
    if not self_named:
        raise BuildError(f"no {name.decode()} certificate found in {where}",
                         "reinstall ovmf and shim-signed (make deps)")
    return min(self_named, key=len)


def pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def trust_anchors(shim: Path, ovmf_vars: Path = OVMF_MS_VARS) -> dict[bytes, str]:
    """CA name -> PEM, for Microsoft's UEFI CA and Debian's Secure Boot CA."""
    try:
        microsoft = ca_certificate(signature_list_certificates(ovmf_vars.read_bytes()),
                                   MICROSOFT_UEFI_CA, ovmf_vars)
        debian = ca_certificate(der_certificates(shim.read_bytes()), DEBIAN_CA, shim)
    except OSError as err:
        raise BuildError(f"cannot read {err.filename}: {err.strerror}",
                         "install ovmf and shim-signed (make deps)") from None
    return {MICROSOFT_UEFI_CA: pem(microsoft), DEBIAN_CA: pem(debian)}


def verify_signed(runner: Runner, files: dict[str, Path], anchors: dict[bytes, str],
                  where: str) -> None:
    """sbverify each ESP file (by its name) against the CA that must have signed it."""
    with tempfile.TemporaryDirectory(prefix="golem-sb-") as tmp:
        for name, path in sorted(files.items()):
            ca = SIGNERS[name]
            cert = Path(tmp) / f"{name}.pem"
            cert.write_text(anchors[ca])
            result = runner.run(["sbverify", "--cert", str(cert), str(path)], check=False,
                                capture=True)
            if result.returncode != 0:
                raise BuildError(f"{where}: {name} is not signed by {ca.decode()} (sbverify "
                                 f"failed), so Secure Boot would refuse it",
                                 "reinstall shim-signed and grub-efi-amd64-signed, then "
                                 "rebuild with --force bootloader")


def verify_fat_image(runner: Runner, image: Path, directory: str,
                     anchors: dict[bytes, str], mtools_env: dict[str, str]) -> None:
    """Copy the EFI binaries out of a FAT image (mtools) and verify them."""
    with tempfile.TemporaryDirectory(prefix="golem-sb-fat-") as tmp:
        files = {}
        for name in SIGNERS:
            target = Path(tmp) / name
            runner.run(["mcopy", "-i", str(image), f"::{directory}/{name}", str(target)],
                       env=mtools_env)
            files[name] = target
        verify_signed(runner, files, anchors, image.name)
