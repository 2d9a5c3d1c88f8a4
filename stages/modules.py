"""Stage modules-NAME: an out-of-tree kernel module compiled once for the image's kernel.

As reference 003 compiles the NVIDIA modules once in a dedicated environment and installs
the result everywhere else: `dkms build` runs in a throw-away copy of the bootstrap rootfs
that gets `linux-headers-<exact kernel>`, the compiler and the module's `*-dkms` package.
The stage keeps only the built `.ko` files and a tiny generated .deb that places them in
/lib/modules/KERNEL/updates/, runs depmod for that kernel and `Provides:` what the DKMS
package provides (so nvidia-smi's `nvidia-open-kernel-VER` or zfsutils-linux's
`zfs-modules` is satisfied); the packages stage installs that .deb before the userspace,
and the image gets no compiler, no headers and no DKMS.

The cache key is the kernel package's version and the module package's version (and the
module's name, its flavour), resolved when planning from the archive's Packages indexes:
a rebuild, or another profile with the same kernel and driver, compiles nothing.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from apt_repo.archive_state import (
    PREFIX,
    Fetch,
    Source,
    archive_state,
    compare_versions,
    http_fetch,
    sources_of,
)
from apt_repo.lock import SNAPSHOT_APT_CONF, SNAPSHOT_APT_SETTINGS, read_package_lock
from apt_repo.sources import DEBIAN_KEYRING, deb822
from builder.chroot import POLICY_RC_D, Chroot
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.mounts import mounts_under
from builder.packagecache import apt_archives
from builder.stage import Stage, StageContext
from stages.fast_install import allow_unsafe_io

DEB_DIR = "debs"  # the packages stage installs every .deb of a dependency's debs/
MODULES_DIR = "modules"  # the built .ko files, as dkms left them
INFO_FILE = "module.json"
IN_CHROOT_SOURCES = "etc/apt/sources.list.d/debian.sources"


@dataclass(frozen=True)
class ModuleSpec:
    name: str  # the profile's kernel.modules value
    package: str  # the DKMS package in Debian (trixie: non-free / contrib)
    # Depends of the DKMS package the image still needs (firmware, modprobe config):
    # a dependency group is kept when every alternative starts with one of these.
    keep: tuple[str, ...] = ()


# Package names and relations as in trixie's Packages indexes (non-free, contrib;
# nvidia-graphics-drivers / nvidia-open-gpu-kernel-modules 550.163.01-2, zfs-linux 2.3.9).
MODULES: dict[str, ModuleSpec] = {
    "nvidia": ModuleSpec("nvidia", "nvidia-kernel-dkms",
                         ("firmware-nvidia-gsp", "nvidia-kernel-support")),
    "nvidia-open": ModuleSpec("nvidia-open", "nvidia-open-kernel-dkms",
                              ("firmware-nvidia-gsp", "nvidia-open-kernel-support")),
    "zfs": ModuleSpec("zfs", "zfs-dkms"),
}
DEFAULT_KERNEL = "linux-image-amd64"
SECURE_BOOT_NOTE = ("Secure Boot: the compiled modules are not signed with a key the "
                    "firmware trusts; a driver profile needs Secure Boot off (README)")
COMPILER = ("gcc", "libc6-dev")
_WANTED = re.compile(r"^(linux-image-|linux-headers-|.+-dkms$)")


# --- plan time: versions from the archive's Packages indexes -------------------------


def parse_index(text: str) -> dict[str, list[dict[str, str]]]:
    """Kernel and DKMS stanzas of a Packages index: name -> [{Version, Depends, Provides}]."""
    found: dict[str, list[dict[str, str]]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        name = fields.get("Package", "")
        if _WANTED.match(name) and "Version" in fields:
            found.setdefault(name, []).append(
                {k: fields.get(k, "") for k in ("Version", "Depends", "Provides")})
    return found


def newest(indexes: list[dict[str, list[dict[str, str]]]], package: str) -> dict[str, str] | None:
    best: dict[str, str] | None = None
    for index in indexes:
        for stanza in index.get(package, []):
            if best is None or compare_versions(stanza["Version"], best["Version"]) > 0:
                best = stanza
    return best


def kernel_release(meta: dict[str, str], meta_name: str) -> str:
    """linux-image-amd64 Depends: linux-image-6.12.118+deb13-amd64 (= ...) -> the release."""
    for group in meta["Depends"].split(","):
        name = group.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-"):
            return name.removeprefix("linux-image-")
    raise BuildError(f"{meta_name} {meta['Version']} depends on no linux-image package",
                     "set a kernel metapackage such as linux-image-amd64 in packages.install")


def exact(indexes: list[dict[str, list[dict[str, str]]]], package: str,
          version: str) -> dict[str, str] | None:
    for index in indexes:
        for stanza in index.get(package, []):
            if stanza["Version"] == version:
                return stanza
    return None


def chosen(indexes: list[dict[str, list[dict[str, str]]]], package: str,
           locked: dict[str, str]) -> dict[str, str] | None:
    """The archive's newest stanza of `package`, or the lock's version of it when the
    build is pinned to a lock that lists it (a BuildError when the indexes lack it)."""
    version = locked.get(package)
    if version is None:
        return newest(indexes, package)
    found = exact(indexes, package, version)
    if found is not None:
        return found
    raise BuildError(f"{package} {version} (from the packages lock) is in none of the "
                     "archive's indexes",
                     "pin the mirror too: --debian-mirror with a snapshot.debian.org URL "
                     "of the lock's date")


def resolve_versions(config: BuildConfig, spec: ModuleSpec,
                     indexes: list[dict[str, list[dict[str, str]]]],
                     locked: dict[str, str] | None = None) -> dict[str, str]:
    """The key of modules-NAME: kernel and module package versions, nothing else. A
    pinned build (`locked`: the lock's versions) takes the kernel the packages stage
    will install from the lock, and the module version its compiled package had."""
    locked = locked or {}
    kernel_meta = next((p for p in config.profile.packages if p.startswith("linux-image-")),
                       DEFAULT_KERNEL)
    meta = chosen(indexes, kernel_meta, locked)
    if meta is None:
        raise BuildError(f"{kernel_meta} is in none of the archive's indexes",
                         "check debian.suite and debian.components")
    release = kernel_release(meta, kernel_meta)
    image = chosen(indexes, f"linux-image-{release}", locked)
    kernel_version = image["Version"] if image else meta["Version"]
    headers = exact(indexes, f"linux-headers-{release}", kernel_version) or \
        newest(indexes, f"linux-headers-{release}")
    mismatch = {}
    if headers is None or headers["Version"] != kernel_version:
        # Not raised here: a failed look-up falls back to the last build's versions, which
        # would quietly pair old modules with the new kernel. As a key value the stage
        # reruns and stops with this line.
        found = headers["Version"] if headers else "missing"
        mismatch = {"headers-mismatch": (
            f"linux-headers-{release} is {found} in the archive but the image gets "
            f"linux-image-{release} {kernel_version}; the {spec.name} module must be "
            "compiled against its kernel's exact headers")}
    # The DKMS package is not in the image, so not in the lock: its compiled package is.
    module_locked = locked.get(module_package_name(spec, release))
    module = chosen(indexes, spec.package,
                    {spec.package: module_locked} if module_locked else {})
    if module is None:
        raise BuildError(f"{spec.package} (kernel.modules {spec.name!r}) is in none of the "
                         "archive's indexes",
                         "add its component (contrib or non-free) to debian.components")
    return {"kernel-release": release, "kernel-version": kernel_version,
            "module-package": spec.package, "module-version": module["Version"], **mismatch}


def load_indexes(config: BuildConfig, fetch: Fetch | None = None
                 ) -> list[dict[str, list[dict[str, str]]]]:
    """The kernel and DKMS stanzas of every index the packages stage installs from, each
    downloaded once per index hash (from InRelease) and kept under TMP_DIR/cache."""
    debian = config.profile.debian
    sources = sources_of(debian.mirror, debian.security_mirror, debian.suite)
    state = archive_state(sources, debian.components, debian.arch, fetch)
    store = config.tmp_dir / "cache" / "modules-index"
    by_suite: dict[str, Source] = {s.suite: s for s in sources}
    get = fetch or http_fetch
    indexes = []
    for name, digest in sorted(state.items()):
        if not name.startswith(PREFIX):
            continue
        suite, component, binary = name.removeprefix(PREFIX).split("/")
        kept = store / f"{digest}.json"
        if kept.is_file():
            indexes.append(json.loads(kept.read_text()))
            continue
        url = by_suite[suite].url(f"{component}/{binary}/Packages.xz")
        try:
            text = lzma.decompress(get(url))
        except lzma.LZMAError:
            raise BuildError(f"{url} is not a valid .xz index", "try again later") from None
        if hashlib.sha256(text).hexdigest() != digest:
            raise BuildError(f"{url} does not match the hash its InRelease lists",
                             "try again later (the mirror may be mid-update)")
        parsed = parse_index(text.decode("utf-8", errors="replace"))
        store.mkdir(parents=True, exist_ok=True)
        kept.with_suffix(".tmp").write_text(json.dumps(parsed, sort_keys=True))
        kept.with_suffix(".tmp").replace(kept)
        indexes.append(parsed)
    return indexes


# --- run time: the compile and the generated package ----------------------------------


def dkms_source(listing: str, upstream: str) -> tuple[str, str]:
    """(dkms module name, version) from the DKMS package's file list: its
    /usr/src/NAME-VERSION/dkms.conf."""
    for line in listing.splitlines():
        match = re.fullmatch(r"/usr/src/(.+)-([^-/]+)/dkms\.conf", line.strip())
        if match and match.group(2) == upstream:
            return match.group(1), match.group(2)
    raise BuildError(f"no /usr/src/*-{upstream}/dkms.conf in the DKMS package",
                     "the package's layout changed: update stages/modules.py")


def upstream_version(version: str) -> str:
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def kept_depends(depends: str, keep: tuple[str, ...]) -> list[str]:
    groups = [g.strip() for g in depends.split(",") if g.strip()]
    return [g for g in groups
            if keep and all(alt.strip().startswith(keep) for alt in g.split("|"))]


def module_package_name(spec: ModuleSpec, release: str) -> str:
    return f"{spec.name}-modules-{release}"


def control_text(spec: ModuleSpec, resolved: dict[str, str], provides: str,
                 depends: list[str], installed_kib: int) -> str:
    release = resolved["kernel-release"]
    all_depends = [f"linux-image-{release} (= {resolved['kernel-version']})", *depends]
    lines = [f"Package: {module_package_name(spec, release)}",
             f"Version: {resolved['module-version']}",
             "Architecture: amd64",
             "Maintainer: golem-gpu-live builder <golem-gpu-live@golem.network>",
             f"Installed-Size: {installed_kib}",
             f"Depends: {', '.join(all_depends)}"]
    if provides:
        lines.append(f"Provides: {provides}")
    # Never the DKMS package beside it: that would bring the compiler back.
    lines += [f"Conflicts: {spec.package}", "Section: kernel", "Priority: optional",
              f"Description: {spec.name} kernel modules for Linux {release}",
              f" Compiled once by golem-gpu-live's modules stage from {spec.package}",
              f" {resolved['module-version']}; no DKMS, compiler or headers needed."]
    return "\n".join(lines) + "\n"


def maintainer_script(release: str) -> str:
    return ("#!/bin/sh\nset -e\n"
            f'if [ -d /lib/modules/{release} ] && command -v depmod >/dev/null; then\n'
            f"    depmod {release}\nfi\n")


def build_module_deb(ctx: StageContext, spec: ModuleSpec, resolved: dict[str, str],
                     modules: list[Path], provides: str, depends: list[str]) -> Path:
    release = resolved["kernel-release"]
    epoch = ctx.config.source_date_epoch
    staging = Path(tempfile.mkdtemp(prefix=".tmp-module-deb-", dir=ctx.output.parent))
    ctx.stack.callback(shutil.rmtree, staging, True)
    target = staging / "usr/lib/modules" / release / "updates" / spec.name
    target.mkdir(parents=True)
    for module in modules:
        shutil.copyfile(module, target / module.name)
    size = sum(p.stat().st_size for p in modules)
    (staging / "DEBIAN").mkdir()
    (staging / "DEBIAN/control").write_text(
        control_text(spec, resolved, provides, depends, max(1, (size + 1023) // 1024)))
    for script in ("postinst", "postrm"):
        (staging / "DEBIAN" / script).write_text(maintainer_script(release))
    for path in sorted(staging.rglob("*"), reverse=True):
        executable = path.is_dir() or path.name in ("postinst", "postrm")
        os.chmod(path, 0o755 if executable else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.chmod(staging, 0o755)
    (ctx.output / DEB_DIR).mkdir()
    deb = ctx.output / DEB_DIR / f"{module_package_name(spec, release)}.deb"
    ctx.runner.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(staging),
                    str(deb)], env={"SOURCE_DATE_EPOCH": str(epoch)})
    return deb


def compile_error(ctx: StageContext, build_dir: Path, what: str, release: str) -> BuildError:
    """The failed compile's make.log goes into the stage log (the compile environment is
    thrown away); the error names its first compiler error."""
    try:
        make_log = (build_dir / "make.log").read_text(errors="replace")
    except OSError:
        make_log = ""
    with open(ctx.log_path, "a", encoding="utf-8") as log:
        log.write(f"# {build_dir}/make.log\n{make_log}\n")
    first = next((line.strip() for line in make_log.splitlines()
                  if "error:" in line or "Error " in line), "no make.log")
    return BuildError(f"dkms build of {what} for Linux {release} failed: {first[:200]}",
                      f"see {ctx.log_path} (make.log at its end)")


def _remove_unless_mounted(root: Path) -> None:
    if root.exists() and not mounts_under(root):
        shutil.rmtree(root, ignore_errors=True)


class ModulesStage(Stage):
    """Subclassed per module by `modules_stage` (a stage's name is its class's)."""

    name = "modules"
    version = 1
    spec: ModuleSpec = MODULES["nvidia-open"]
    depends: tuple[str, ...] = ("bootstrap",)
    code = ("builder.chroot", "apt_repo.archive_state", "stages.fast_install")
    tools = ("chroot", "mount", "umount", "cp", "dpkg-deb")
    description = "compile an out-of-tree kernel module once for the image's kernel"
    # Nothing from the profile: the resolved versions are the whole key.
    config_keys = ()

    def resolved_inputs(self, config: BuildConfig) -> dict[str, str]:
        locked = read_package_lock(config.packages_lock).versions() \
            if config.packages_lock else None
        return resolve_versions(config, self.spec, load_indexes(config), locked)

    def run(self, ctx: StageContext) -> None:
        spec = self.spec
        resolved = dict(ctx.resolved)
        if "kernel-version" not in resolved:
            raise BuildError(f"the kernel and {spec.package} versions could not be looked up "
                             f"({resolved.get('unresolved', 'offline')})",
                             "build once with the Debian archive reachable")
        if "headers-mismatch" in resolved:
            raise BuildError(resolved["headers-mismatch"],
                             "build again once the archive carries the matching headers")
        release, kernel_version = resolved["kernel-release"], resolved["kernel-version"]
        ctx.progress(f"{spec.name}: {spec.package} {resolved['module-version']} for Linux "
                     f"{release} ({kernel_version})")
        ctx.progress(SECURE_BOOT_NOTE)
        debian = ctx.config.profile.debian
        root = Path(tempfile.mkdtemp(prefix=".tmp-modules-build-", dir=ctx.output.parent)) / "root"
        ctx.stack.callback(_remove_unless_mounted, root.parent)
        ctx.progress("copying the bootstrap rootfs (a throw-away compile environment)")
        ctx.runner.run(["cp", "-a", "--reflink=auto",
                        str(ctx.inputs["bootstrap"] / "rootfs"), str(root)])
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        sources = deb822(debian.mirror, (debian.suite, f"{debian.suite}-updates"),
                         DEBIAN_KEYRING, debian.components)
        if debian.security_mirror:
            sources += "\n" + deb822(debian.security_mirror, f"{debian.suite}-security",
                                     DEBIAN_KEYRING, debian.components)
        (root / IN_CHROOT_SOURCES).parent.mkdir(parents=True, exist_ok=True)
        (root / IN_CHROOT_SOURCES).write_text(sources)
        if ctx.config.packages_lock:  # a pinned build: its mirror may be a snapshot
            (root / SNAPSHOT_APT_CONF).write_text(SNAPSHOT_APT_SETTINGS)
        allow_unsafe_io(root)  # a throw-away compile environment: no fsync per file
        (root / "usr/sbin/policy-rc.d").write_text(POLICY_RC_D)
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        install = ["apt-get", "install", "--yes", "--no-install-recommends"]
        with ExitStack() as mounts:
            chroot = Chroot(root, ctx.runner, mounts)
            chroot.run(["apt-get", "update"])
            # Downloads go through the shared package cache (TMP_DIR/packages).
            with apt_archives(ctx.config, ctx.runner, root, ctx.progress):
                # The DKMS package first, while no kernel is there: its postinst builds nothing.
                ctx.progress(f"installing {spec.package} and the compiler ({', '.join(COMPILER)})")
                # gcc and libc6-dev are Recommends (of dkms, of gcc-14) that apt leaves out here;
                # NVIDIA's conftest.sh needs a compiler that can build a user-space program.
                chroot.run([*install, f"{spec.package}={resolved['module-version']}",
                            *COMPILER])
                # Without the headers hook the one compile is the explicit `dkms build` below.
                for hook in ("etc/kernel/header_postinst.d/dkms", "etc/kernel/postinst.d/dkms"):
                    (root / hook).unlink(missing_ok=True)
                ctx.progress(f"installing linux-headers-{release} {kernel_version}")
                chroot.run([*install, f"linux-headers-{release}={kernel_version}"])
            headers = chroot.run(["dpkg-query", "--show", "--showformat", "${Version}",
                                  f"linux-headers-{release}"], capture=True).stdout.strip()
            if headers != kernel_version:
                raise BuildError(f"linux-headers-{release} {headers} does not match the "
                                 f"image's kernel linux-image-{release} {kernel_version}",
                                 "build again once the archive carries the matching headers")
            listing = chroot.run(["dpkg-query", "--listfiles", spec.package],
                                 capture=True).stdout
            name, version = dkms_source(listing, upstream_version(resolved["module-version"]))
            relations = chroot.run(["dpkg-query", "--show", "--showformat",
                                    "${Provides}\n${Depends}\n", spec.package],
                                   capture=True).stdout.split("\n")
            ctx.progress(f"dkms build {name}/{version} for {release} (the one compile)")
            built_ok = chroot.run(["dkms", "build", "-m", name, "-v", version, "-k", release],
                                  check=False).returncode == 0
            if not built_ok:
                raise compile_error(ctx, root / "var/lib/dkms" / name / version / "build",
                                    f"{name}/{version}", release)
        built = sorted((root / "var/lib/dkms" / name / version / release).glob(
            "*/module/*.ko*"))
        if not built:
            raise BuildError(f"dkms build of {name}/{version} left no modules for {release}",
                             f"see the log; the module may not support Linux {release}")
        (ctx.output / MODULES_DIR).mkdir()
        for module in built:
            shutil.copyfile(module, ctx.output / MODULES_DIR / module.name)
        provides, depends = (relations + ["", ""])[:2]
        build_module_deb(ctx, spec, resolved, built, provides.strip(),
                         kept_depends(depends, spec.keep))
        (ctx.output / INFO_FILE).write_text(json.dumps(
            {**resolved, "dkms-module": name, "modules": [m.name for m in built]},
            indent=1, sort_keys=True) + "\n")
        ctx.progress(f"built {', '.join(m.name for m in built)}")


_STAGES: dict[str, type[ModulesStage]] = {}


def modules_stage(module: str) -> ModulesStage:
    """The stage `modules-NAME` for one kernel.modules value."""
    if module not in _STAGES:
        spec = MODULES[module]
        _STAGES[module] = type(f"ModulesStage_{module.replace('-', '_')}", (ModulesStage,),
                               {"name": f"modules-{module}", "spec": spec,
                                "__module__": __name__})
    return _STAGES[module]()
