"""Fake GOLEM packages that behave like the real ones where it matters for the image.

Facts from GOLEM's sources, each named where it is used:
- golem-provider is yagna v0.17.6's `provider` deb variant (Cargo.toml
  [package.metadata.deb.variants.provider]): yagna, ya-provider, gftp and golemsp in
  /usr/bin, exe-unit in /usr/lib/yagna/plugins; its maintainer scripts
  debian/provider/{preinst,templates} refuse a first install unless the debconf
  question golem/terms/subsidy-01 (select, choices no/yes) is answered yes.
- ya-runtime-vm, ya-runtime-vm-nvidia and ya-runtime-wasi install a runtime descriptor
  /usr/lib/yagna/plugins/ya-runtime-*.json with paths relative to it.
- ya-installer-resources installs the manifest bundle at /usr/lib/yagna/installer with
  the directories `golemsp manifest-bundle add` reads (golem_cli/src/manifest.rs).
golemsp and ya-provider are tests/golem_standin.py: argv recorded, flags of the pinned
version only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.apt_repo.conftest import FakeGitHub, make_deb
from tests.golem_standin import BUNDLE_DIRS as BUNDLE_DIRS  # what manifest.rs reads

STANDIN = Path(__file__).with_name("golem_standin.py")
YAGNA_VERSION = "0.17.6"
PLUGINS_DIR = "usr/lib/yagna/plugins"
INSTALLER_DIR = "usr/lib/yagna/installer"
SUBSIDY_QUESTION = "golem/terms/subsidy-01"
SUBSIDY_PRESEED = f"golem {SUBSIDY_QUESTION} string yes"  # upstream rootfs/Dockerfile

# The logic of yagna v0.17.6 debian/provider/preinst: on a first install ask the
# question (critical priority: shown even to the noninteractive frontend's caller, which
# skips it), and without `yes` show a note, forget the answer and fail. Nothing is
# printed: with apt's noninteractive frontend the refusal is only dpkg's exit status.
PROVIDER_PREINST = f"""#!/bin/sh
[ "$1" = "install" ] || exit 0

. /usr/share/debconf/confmodule

db_version 2.0
db_input critical {SUBSIDY_QUESTION} || true
db_go

db_get {SUBSIDY_QUESTION} || true
if [ "$RET" != "yes" ]; then
    db_input critical golem/subsidy-tos-rejected || true
    db_go
    db_reset {SUBSIDY_QUESTION}
    exit 1
fi
"""

# The questions of debian/provider/templates (names, types, choices as upstream).
PROVIDER_TEMPLATES = f"""Template: {SUBSIDY_QUESTION}
Type: select
Choices: no, yes
Description: Do you accept the terms of use?
 Installing this software means accepting GOLEM's terms of use
 (https://docs.golem.network/docs/golem/terms).

Template: golem/gsb-port
Type: string
Default: 7464
Description: Local GSB port

Template: golem/subsidy-tos-rejected
Type: note
Description: The terms of use must be accepted to install this package.
"""


def _program(name: str, version: str) -> str:
    """A binary nobody calls with arguments in the tests: says what it is."""
    return f"#!/bin/sh\necho \"{name} {version} (test stand-in)\"\n"


def runtime_descriptor(name: str, version: str, runtime_path: str,
                       description: str) -> str:
    return json.dumps([{
        "name": name, "version": version, "supervisor-path": "exe-unit",
        "runtime-path": runtime_path, "description": description,
        "extra-args": ["--cap-handoff"]}], indent=2) + "\n"


@dataclass(frozen=True)
class FakePackage:
    repo: str  # the GitHub repository that releases it
    tag: str
    package: str
    version: str
    prerelease: bool
    published: str
    files: tuple[tuple[str, str], ...]
    executables: tuple[str, ...] = ()
    depends: str = ""
    control_files: tuple[tuple[str, str], ...] = ()

    def build(self, out_dir: Path) -> Path:
        return make_deb(out_dir, self.package, self.version, "amd64", files=dict(self.files),
                        depends=self.depends, control_files=dict(self.control_files),
                        executables=self.executables)


def golem_provider(version: str = YAGNA_VERSION, tag: str = f"v{YAGNA_VERSION}",
                   prerelease: bool = False,
                   published: str = "2025-11-01T00:00:00Z") -> FakePackage:
    standin = STANDIN.read_text()
    files = {
        "usr/bin/yagna": _program("yagna", version),
        "usr/bin/gftp": _program("gftp", version),
        "usr/bin/golemsp": standin,
        "usr/bin/ya-provider": standin,
        f"{PLUGINS_DIR}/exe-unit": _program("exe-unit", version),
        "usr/share/doc/yagna/VERSION": version + "\n",
    }
    return FakePackage(
        "golemfactory/yagna", tag, "golem-provider", version, prerelease, published,
        tuple(files.items()), executables=tuple(p for p in files if "/bin/" in p
                                                or p.endswith("/exe-unit")),
        # the stand-ins are python3 scripts (the real binaries need libc6 only)
        depends="python3",
        control_files=(("preinst", PROVIDER_PREINST), ("templates", PROVIDER_TEMPLATES)))


def ya_runtime_vm(version: str = "0.4.2", tag: str = "v0.4.2",
                  published: str = "2024-09-03T00:00:00Z") -> FakePackage:
    binary = f"{PLUGINS_DIR}/ya-runtime-vm/ya-runtime-vm"
    return FakePackage(
        "golemfactory/ya-runtime-vm", tag, "ya-runtime-vm", version, False, published,
        ((f"{PLUGINS_DIR}/ya-runtime-vm.json", runtime_descriptor(
            "vm", version, "ya-runtime-vm/ya-runtime-vm", "vm runtime")),
         (binary, _program("ya-runtime-vm", version))),
        executables=(binary,))


def ya_runtime_vm_nvidia(version: str = "0.1.5", tag: str = "v0.1.5", prerelease: bool = False,
                         published: str = "2024-09-26T00:00:00Z") -> FakePackage:
    binary = f"{PLUGINS_DIR}/ya-runtime-vm-nvidia/ya-runtime-vm-nvidia"
    return FakePackage(
        "golemfactory/ya-runtime-vm-nvidia", tag, "ya-runtime-vm-nvidia", version, prerelease,
        published,
        ((f"{PLUGINS_DIR}/ya-runtime-vm-nvidia.json", runtime_descriptor(
            "vm-nvidia", version, "ya-runtime-vm-nvidia/ya-runtime-vm-nvidia",
            "vm runtime with NVIDIA GPU passthrough")),
         (binary, _program("ya-runtime-vm-nvidia", version))),
        executables=(binary,), depends="ya-runtime-vm, golem-nvidia-kernel")


def ya_runtime_wasi(version: str = "0.2.4", tag: str = "pre-rel-v0.2.4") -> FakePackage:
    binary = f"{PLUGINS_DIR}/ya-runtime-wasi/ya-runtime-wasi"
    return FakePackage(
        "golemfactory/ya-runtime-wasi", tag, "ya-runtime-wasi-cli", version, True,
        "2023-06-01T00:00:00Z",
        ((f"{PLUGINS_DIR}/ya-runtime-wasi.json", runtime_descriptor(
            "wasmtime", version, "ya-runtime-wasi/ya-runtime-wasi", "wasi runtime")),
         (binary, _program("ya-runtime-wasi", version))),
        executables=(binary,))


def golem_nvidia_kernel(version: str = "6.1.90", tag: str = "v6.1.90") -> FakePackage:
    return FakePackage(
        "golemfactory/golem-nvidia-kernel", tag, "golem-nvidia-kernel", version, False,
        "2025-01-01T00:00:00Z",
        ((f"{PLUGINS_DIR}/ya-runtime-vm-nvidia/runtime/VERSION", version + "\n"),))


def ya_installer_resources(version: str = "0.1.5", tag: str = "v0.1.5") -> FakePackage:
    bundle = {
        "whitelist/strict.lst": "crates.io\npypi.org\n",
        "whitelist/regex.lst": r".*\.dev\.golem\.network" + "\n",
        "certs/golem-audited.crt": "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n"
                                   "-----END CERTIFICATE-----\n",
        "golem-certs/golem-partner.crt": "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n"
                                         "-----END CERTIFICATE-----\n",
    }
    return FakePackage(
        "golemfactory/ya-installer-resources", tag, "ya-installer-resources", version, False,
        "2024-10-01T00:00:00Z",
        tuple((f"{INSTALLER_DIR}/{rel}", text) for rel, text in bundle.items()))


# What the image takes: the components.toml patterns of the release channel select these.
SELECTED = (
    golem_provider(),
    ya_runtime_wasi(),
    ya_runtime_vm(),
    ya_runtime_vm_nvidia(),
    golem_nvidia_kernel(),
    ya_installer_resources(),
)
# Published later than what is selected, and not to be taken: a yagna release
# candidate (the release channel takes full releases only), a ya-runtime-vm v0.5 (the
# release channel stays on v0.4) and a ya-runtime-vm-nvidia prerelease that bundles a
# single-device ya-runtime-vm (tests/apt_repo/test_runtime_compat.py).
DECOYS = (
    golem_provider("0.17.7~rc1", "pre-rel-v0.17.7-rc1", True, "2026-01-01T00:00:00Z"),
    ya_runtime_vm("0.5.2", "v0.5.2", "2024-10-30T00:00:00Z"),
    ya_runtime_vm_nvidia("0.1.3~rc11", "pre-rel-v0.1.3-rc11", True, "2026-01-01T00:00:00Z"),
)


def publish(fake: FakeGitHub, out_dir: Path,
            packages: tuple[FakePackage, ...] = SELECTED + DECOYS) -> None:
    """Every package as a release of its repository on the fake GitHub."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for package in packages:
        version_dir = out_dir / package.tag
        version_dir.mkdir(exist_ok=True)
        fake.add_release(package.repo, package.tag, [package.build(version_dir)],
                         prerelease=package.prerelease, published=package.published)
