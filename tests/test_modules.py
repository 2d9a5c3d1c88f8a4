"""Kernel modules compiled once (stages/modules.py), the extra APT repository and the
gpu-container-node profile, with a recording runner and fake package indexes."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest

import stages.modules
from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.pipeline import make_plan
from builder.profile import KERNEL_MODULES, load_profile
from builder.stage import StageContext
from stages.catalog import stage_list
from stages.modules import (
    MODULES,
    control_text,
    dkms_source,
    kept_depends,
    modules_stage,
    parse_index,
    resolve_versions,
)
from stages.packages import PackagesStage, extra_not_configured, extra_sources
from tests.fakes import RecordingRunner

KREL = "6.12.118+deb13-amd64"
KVER = "6.12.118-1"
NV = "550.163.01-2"


def kernel_stanzas(release: str, version: str, headers: str) -> str:
    """The kernel metapackage, image and headers as in trixie's indexes (security main)."""
    return (f"Package: linux-image-amd64\nVersion: {version}\n"
            f"Depends: linux-image-{release} (= {version})\n\n"
            f"Package: linux-image-{release}\nVersion: {version}\n\n"
            f"Package: linux-headers-{release}\nVersion: {headers}\n")


# Stanzas as in trixie's indexes (security main, contrib).
MAIN = kernel_stanzas(KREL, KVER, "{headers}")
CONTRIB = f"""Package: nvidia-open-kernel-dkms
Version: {NV}
Provides: nvidia-open-kernel-550.163.01, nvidia-open-kernel-dkms-any (= 550.163.01)
Depends: firmware-nvidia-gsp (= 550.163.01) | firmware-nvidia-gsp-550.163.01, \
nvidia-open-kernel-support--v1, dkms (>= 3.0.11)
Description: NVIDIA open kernel modules
 long text: Package: not-a-field

Package: zfs-dkms
Version: 2.3.9-0+deb13u1
Provides: zfs-modules
"""


# trixie's non-free: the proprietary module, which gpu-container-node compiles.
NON_FREE = f"""Package: nvidia-kernel-dkms
Version: {NV}
Provides: nvidia-kernel-550.163.01, nvidia-kernel-dkms-any (= 550.163.01)
Depends: firmware-nvidia-gsp (= 550.163.01) | firmware-nvidia-gsp-550.163.01, \
nvidia-kernel-support--v1, dkms (>= 3.0.11)
"""


def indexes(headers: str = KVER) -> list[dict[str, list[dict[str, str]]]]:
    return [parse_index(MAIN.format(headers=headers)), parse_index(CONTRIB),
            parse_index(NON_FREE)]


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-container-node", "1.0", tmp_path / "tmp",
                       tmp_path / "work")


def test_every_allowed_module_has_a_stage_spec() -> None:
    assert set(MODULES) == set(KERNEL_MODULES)


def test_the_key_is_kernel_and_module_versions(config: BuildConfig) -> None:
    assert resolve_versions(config, MODULES["nvidia-open"], indexes()) == {
        "kernel-release": KREL, "kernel-version": KVER,
        "module-package": "nvidia-open-kernel-dkms", "module-version": NV}


def test_headers_lagging_the_kernel_is_one_error_naming_both_versions(
        config: BuildConfig, tmp_path: Path) -> None:
    resolved = resolve_versions(config, MODULES["nvidia-open"], indexes(headers="6.12.117-1"))
    # a key value (the stage reruns), never a look-up failure the plan would paper over
    assert resolved["kernel-version"] == KVER
    runner = RecordingRunner()
    with ExitStack() as stack, pytest.raises(BuildError) as err:
        modules_stage("nvidia-open").run(context(config, tmp_path / "o", runner, stack,
                                                 resolved, bootstrap=tmp_path / "boot"))
    assert err.value.problem == (
        f"linux-headers-{KREL} is 6.12.117-1 in the archive but the image gets "
        f"linux-image-{KREL} {KVER}; the nvidia-open module must be compiled against its "
        "kernel's exact headers")
    assert runner.argvs == []
    missing = resolve_versions(config, MODULES["nvidia-open"],
                               [parse_index(MAIN.split("Package: linux-headers")[0]),
                                parse_index(CONTRIB)])
    assert f"linux-headers-{KREL} is missing" in missing["headers-mismatch"]


def test_a_module_package_missing_from_the_archive_names_the_component(
        config: BuildConfig) -> None:
    with pytest.raises(BuildError, match="nvidia-kernel-dkms .* none of the archive"):
        resolve_versions(config, MODULES["nvidia"], indexes()[:2])


OLD_KREL, OLD_KVER, OLD_NV = "6.12.107+deb13-amd64", "6.12.107-1", "550.163.01-1"
OLDER = kernel_stanzas(OLD_KREL, OLD_KVER, OLD_KVER) + \
    f"\nPackage: nvidia-kernel-dkms\nVersion: {OLD_NV}\n"


def test_a_pinned_build_compiles_for_the_locked_kernel_and_driver(
        config: BuildConfig) -> None:
    # A snapshot mirror can list older and newer versions: the lock decides, as it does
    # for the packages stage (which installs linux-image-amd64 at the locked version).
    found = [*indexes(), parse_index(OLDER)]
    locked = {"linux-image-amd64": OLD_KVER, f"linux-image-{OLD_KREL}": OLD_KVER,
              f"nvidia-modules-{OLD_KREL}": OLD_NV, "bash": "5.2.37-2"}
    assert resolve_versions(config, MODULES["nvidia"], found, locked) == {
        "kernel-release": OLD_KREL, "kernel-version": OLD_KVER,
        "module-package": "nvidia-kernel-dkms", "module-version": OLD_NV}
    # A lock from a build without this module: the archive's newest driver.
    assert resolve_versions(config, MODULES["nvidia"], found, {
        "linux-image-amd64": OLD_KVER})["module-version"] == NV
    # Unpinned, as before: the newest of everything.
    assert resolve_versions(config, MODULES["nvidia"], found)["kernel-version"] == KVER
    with pytest.raises(BuildError) as err:
        resolve_versions(config, MODULES["nvidia"], indexes(), locked)
    assert err.value.problem == (f"linux-image-amd64 {OLD_KVER} (from the packages lock) is "
                                 "in none of the archive's indexes")
    assert "snapshot.debian.org" in err.value.fix


def test_the_stage_reads_the_build_s_packages_lock(fake_project: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "golem-gpu-live-1.0.packages.lock"
    lock.write_text(f"linux-image-amd64 {OLD_KVER} -\nlinux-image-{OLD_KREL} {OLD_KVER} -\n")
    monkeypatch.setattr(stages.modules, "load_indexes",
                        lambda config: [*indexes(), parse_index(OLDER)])
    pinned = make_config(fake_project, "gpu-container-node", "1.0", tmp_path / "tmp",
                         tmp_path / "work", packages_lock=lock)
    assert modules_stage("nvidia").resolved_inputs(pinned)["kernel-release"] == OLD_KREL


def plan_keys(project: Path, tmp: Path, profile: str, monkeypatch: pytest.MonkeyPatch,
              found: list[dict[str, list[dict[str, str]]]]) -> dict[str, str]:
    monkeypatch.setattr(stages.modules, "load_indexes", lambda config: found)
    monkeypatch.setattr(PackagesStage, "resolved_inputs", lambda self, config: {})
    config = make_config(project, profile, "1.0", tmp / "tmp", tmp / "work")
    plan = make_plan(config, stage_list(config))
    return {step.stage.name: step.key for step in plan.steps}


def test_two_profiles_with_one_kernel_and_driver_share_the_compiled_modules(
        fake_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_project / "rootfs/profiles/other-gpu.toml").write_text(
        'extends = "gpu-container-node"\n[packages]\ninstall = ["htop"]\n'
        '[image]\nhostname = "other"\n[extra_apt]\nurl = "http://127.0.0.1:1/r"\n'
        'suite = "stable"\ncomponents = ["main"]\nkeyring = "k.gpg"\n')
    first = plan_keys(fake_project, tmp_path, "gpu-container-node", monkeypatch, indexes())
    other = plan_keys(fake_project, tmp_path, "other-gpu", monkeypatch, indexes())
    assert first["modules-nvidia"] == other["modules-nvidia"]
    assert first["packages"] != other["packages"]
    newer = parse_index(NON_FREE.replace(NV, "550.163.01-3"))
    moved = plan_keys(fake_project, tmp_path, "gpu-container-node", monkeypatch,
                      [*indexes()[:2], newer])
    assert moved["modules-nvidia"] != first["modules-nvidia"]
    assert moved["packages"] != first["packages"]  # it installs the new package


def test_the_stage_reads_no_profile_value(config: BuildConfig) -> None:
    stage = modules_stage("nvidia-open")
    assert stage.name == "modules-nvidia-open" and stage.config_keys == ()
    assert stage.depends == ("bootstrap",) and stage.input_files(config) == []


def test_catalog_compiles_before_packages_which_installs_the_result(
        config: BuildConfig, fake_project: Path, tmp_path: Path) -> None:
    names = [s.name for s in stage_list(config)]
    assert names[:3] == ["bootstrap", "modules-nvidia", "packages"]
    packages = stage_list(config)[2]
    assert packages.depends == ("bootstrap", "modules-nvidia")
    gpu_node = make_config(fake_project, "gpu-node", "1.0", tmp_path / "t", tmp_path / "w")
    assert not [s for s in stage_list(gpu_node) if s.name.startswith("modules")]


def context(config: BuildConfig, output: Path, runner: RecordingRunner, stack: ExitStack,
            resolved: dict[str, str], **inputs: Path) -> StageContext:
    output.mkdir(parents=True, exist_ok=True)
    return StageContext(config=config, output=output, inputs=inputs, runner=runner,
                        stack=stack, log_path=output / "log", progress=lambda m: None,
                        resolved=resolved)


RESOLVED = {"kernel-release": KREL, "kernel-version": KVER,
            "module-package": "nvidia-open-kernel-dkms", "module-version": NV}
LISTING = ("/usr/src/nvidia-current-open-550.163.01\n"
           "/usr/src/nvidia-current-open-550.163.01/dkms.conf\n")


def recording_compile(tmp_path: Path, headers: str = KVER) -> RecordingRunner:
    runner = RecordingRunner(responses={
        ("chroot",): (0, ""),
        ("chroot", str(tmp_path), "dpkg-query"): (0, ""),
    })
    roots: list[Path] = []

    def copy(argv: tuple[str, ...]) -> None:
        root = Path(argv[-1])
        roots.append(root)
        (root / "etc/apt").mkdir(parents=True)
        (root / "usr/sbin").mkdir(parents=True)

    def dkms(argv: tuple[str, ...]) -> None:
        built = roots[0] / f"var/lib/dkms/nvidia-current-open/550.163.01/{KREL}/x86_64/module"
        built.mkdir(parents=True)
        for name in ("nvidia.ko.xz", "nvidia-uvm.ko.xz"):
            (built / name).write_bytes(b"\x7fELF" + name.encode())

    def query(argv: tuple[str, ...]) -> None:
        answers = {"--listfiles": LISTING, "${Version}": headers,
                   "${Provides}\n${Depends}\n": CONTRIB.split("Provides: ")[1].split("\n")[0]
                   + "\n" + CONTRIB.split("Depends: ")[1].split("\nDescription")[0] + "\n"}
        out = next(v for k, v in answers.items() if k in argv)
        runner.responses[("chroot", str(roots[0]), "dpkg-query", *argv[3:])] = (0, out)

    def deb(argv: tuple[str, ...]) -> None:
        Path(argv[-1]).write_bytes(b"deb")

    runner.side_effects.update({("cp",): copy, ("dpkg-deb",): deb})
    runner.side_effects[("chroot",)] = lambda argv: (
        dkms(argv) if argv[2] == "dkms" else query(argv) if argv[2] == "dpkg-query" else None)
    return runner


def test_compile_argv_sequence_and_output(config: BuildConfig, tmp_path: Path) -> None:
    runner = recording_compile(tmp_path)
    out = tmp_path / "cache" / "out"
    with ExitStack() as stack:
        modules_stage("nvidia-open").run(context(config, out, runner, stack, RESOLVED,
                                                 bootstrap=tmp_path / "boot"))
    inside = [a[2:] for a in runner.argvs if a[0] == "chroot"]
    assert [a[:2] for a in inside] == [
        ("apt-get", "update"), ("apt-get", "install"), ("apt-get", "install"),
        ("dpkg-query", "--show"), ("dpkg-query", "--listfiles"), ("dpkg-query", "--show"),
        ("dkms", "build")]
    # the DKMS package before the headers (its postinst finds no kernel), exact versions
    assert inside[1][-3:] == (f"nvidia-open-kernel-dkms={NV}", "gcc", "libc6-dev")
    assert inside[2][-1] == f"linux-headers-{KREL}={KVER}"
    assert inside[6] == ("dkms", "build", "-m", "nvidia-current-open", "-v", "550.163.01",
                         "-k", KREL)
    assert runner.argvs[0][:3] == ("cp", "-a", "--reflink=auto")
    assert runner.argvs[0][3] == str(tmp_path / "boot/rootfs")
    # the output: the built modules and one package, no compile environment
    assert sorted(p.name for p in out.iterdir()) == ["debs", "module.json", "modules"]
    assert sorted(p.name for p in (out / "modules").iterdir()) == [
        "nvidia-uvm.ko.xz", "nvidia.ko.xz"]
    assert [p.name for p in (out / "debs").iterdir()] == [f"nvidia-open-modules-{KREL}.deb"]
    assert json.loads((out / "module.json").read_text())["dkms-module"] == "nvidia-current-open"
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # removed on unwind (else swept)
    programs = [a[0] for a in runner.argvs]
    assert programs[-6:] == ["umount"] * 5 + ["dpkg-deb"]  # the package after unmounting


def test_installed_headers_not_matching_the_kernel_stop_the_build(
        config: BuildConfig, tmp_path: Path) -> None:
    runner = recording_compile(tmp_path, headers="6.12.117-1")
    with ExitStack() as stack, pytest.raises(BuildError) as err:
        modules_stage("nvidia-open").run(context(config, tmp_path / "o", runner, stack,
                                                 RESOLVED, bootstrap=tmp_path / "boot"))
    assert "6.12.117-1" in err.value.problem and KVER in err.value.problem
    assert "dkms" not in [a[2] for a in runner.argvs if a[0] == "chroot"]


def test_unresolved_versions_are_a_clear_error(config: BuildConfig, tmp_path: Path) -> None:
    with ExitStack() as stack, pytest.raises(BuildError, match="could not be looked up"):
        modules_stage("zfs").run(context(config, tmp_path / "o", RecordingRunner(), stack,
                                         {"unresolved": "offline"}))


def test_generated_package_provides_what_the_dkms_package_did() -> None:
    depends = kept_depends(CONTRIB.split("Depends: ")[1].split("\n")[0],
                           MODULES["nvidia-open"].keep)
    assert depends == ["firmware-nvidia-gsp (= 550.163.01) | firmware-nvidia-gsp-550.163.01",
                       "nvidia-open-kernel-support--v1"]
    control = control_text(MODULES["nvidia-open"], RESOLVED,
                           "nvidia-open-kernel-550.163.01", depends, 10)
    assert f"Package: nvidia-open-modules-{KREL}\nVersion: {NV}\n" in control
    assert f"Depends: linux-image-{KREL} (= {KVER}), firmware-nvidia-gsp" in control
    assert "Provides: nvidia-open-kernel-550.163.01\n" in control
    assert "Conflicts: nvidia-open-kernel-dkms\n" in control
    assert "dkms (" not in control
    assert kept_depends("dkms (>= 3.0.11), file, libc6-dev | libc-dev", ()) == []


def test_dkms_source_found_from_the_package_listing() -> None:
    assert dkms_source(LISTING, "550.163.01") == ("nvidia-current-open", "550.163.01")
    with pytest.raises(BuildError, match="dkms.conf"):
        dkms_source(LISTING, "560.0")


def test_packages_installs_stage_debs_before_the_profile_packages(
        config: BuildConfig, tmp_path: Path) -> None:
    from tests.test_stages_rootfs import fake_bootstrap

    runner = RecordingRunner(responses={("chroot",): (0, "")})
    runner.side_effects[("cp",)] = lambda argv: fake_bootstrap(Path(argv[-1]))
    modules = tmp_path / "mod"
    (modules / "debs").mkdir(parents=True)
    (modules / "debs" / "nvidia-open-modules-k.deb").write_bytes(b"deb")
    out = tmp_path / "out"
    messages: list[str] = []
    with ExitStack() as stack:
        ctx = StageContext(config=config, output=out, inputs={
            "bootstrap": tmp_path / "boot", "modules-nvidia-open": modules}, runner=runner,
            stack=stack, log_path=tmp_path / "log", progress=messages.append)
        out.mkdir()
        PackagesStage(deb_stages=("modules-nvidia-open",)).run(ctx)
    installs = [a[2:] for a in runner.argvs if a[0] == "chroot" and a[3:4] == ("install",)]
    assert installs[0][-1] == "/var/lib/golem-live/stage-debs/nvidia-open-modules-k.deb"
    assert "nvidia-smi" in installs[1]
    assert not (out / "rootfs/var/lib/golem-live/stage-debs").exists()
    # the container toolkit's repository is not configured: said once, left out
    said = [m for m in messages if "not configured" in m]
    assert len(said) == 1 and "nvidia-container-toolkit left out" in said[0]
    assert "extends gpu-container-node" in said[0] and "extra_apt.url" in said[0]
    assert not any("nvidia-container-toolkit" in a for a in installs[1])


def extra_profile(project: Path, body: str) -> Path:
    (project / "rootfs/profiles/extra.toml").write_text('extends = "gpu-container-node"\n'
                                                         + body)
    return project


def test_extra_repository_sources_with_signed_by(fake_project: Path, tmp_path: Path) -> None:
    extra_profile(fake_project, '[extra_apt]\nurl = "https://example.org/deb/amd64"\n'
                                'suite = "/"\nkeyring = "keys/nv.asc"\n')
    config = make_config(fake_project, "extra", "1", tmp_path / "t", tmp_path / "w")
    assert extra_sources(config) == ("Types: deb\nURIs: https://example.org/deb/amd64\n"
                                     "Suites: /\nSigned-By: /etc/apt/keyrings/extra-apt.asc\n")
    assert extra_not_configured(config) is None
    assert PackagesStage().input_files(config) == [fake_project / "keys/nv.asc"]
    with pytest.raises(BuildError, match="extra_apt.keyring keys/nv.asc does not exist"):
        PackagesStage().preflight(config)


@pytest.mark.parametrize(("body", "problem"), [
    ('[kernel]\nmodules = ["nvidia-closed"]\n', "kernel.modules: 'nvidia-closed' is not one"),
    ('[kernel]\nmodules = ["nvidia-open"]\n',
     "kernel.modules: 'nvidia' and 'nvidia-open' exclude each other"),
    ('[extra_apt]\nurl = "http://x.org/r"\n', "extra_apt.suite: must be set when"),
    ('[extra_apt]\nurl = "http://x.org/r"\nsuite = "s"\nkeyring = "k"\n',
     "extra_apt.components: must not be empty"),
    ('[extra_apt]\nurl = "ftp://x"\n', "extra_apt.url: 'ftp://x' is not"),
])
def test_bad_module_and_extra_repository_settings(fake_project: Path, body: str,
                                                  problem: str) -> None:
    extra_profile(fake_project, body)
    with pytest.raises(BuildError, match="rootfs/profiles/extra.toml: " + problem):
        load_profile(fake_project, "extra")


def test_gpu_container_node_profile(project_root: Path) -> None:
    profile = load_profile(project_root, "gpu-container-node")
    assert profile.kernel_modules == ("nvidia",)
    assert {"podman", "crun", "nvidia-smi", "nvidia-modprobe"} <= set(profile.packages)
    assert not [p for p in profile.packages if "dkms" in p or p.startswith(("gcc", "linux-h"))]
    assert profile.extra_apt.url == "" and profile.extra_apt.packages == (
        "nvidia-container-toolkit",)
    overlay = project_root / "rootfs/overlay/gpu-container-node/etc"
    assert "blacklist nouveau" in (overlay / "modprobe.d/nouveau-blacklist.conf").read_text()
    cdi = (overlay / "systemd/system/nvidia-cdi-generate.service").read_text()
    assert "ConditionPathExists=/usr/bin/nvidia-ctk" in cdi
    assert "nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml" in cdi
    assert "nvidia-cdi-generate.service" in profile.services
    no_gpu = "ExecCondition=/bin/sh -c 'grep -qsx 0x10de /sys/bus/pci/devices/*/vendor'"
    assert no_gpu in cdi
    assert no_gpu in (overlay / "systemd/system/nvidia-persistenced.service.d/"
                                "gpu-present.conf").read_text()
    smoke = (overlay / "systemd/system/cuda-vector-add.service").read_text()
    assert "--device nvidia.com/gpu=all" in smoke and "[Install]" not in smoke
    assert "cuda-vector-add.service" not in profile.services
    # The shared image contract through gpu-node's wizard, as the user it configures; the
    # GPU stays with the host driver (common's VFIO blacklist of nvidia is replaced).
    assert profile.chain == ("gpu-container-node", "gpu-node")
    assert profile.user == "golem" and "golemwz.service" in profile.services
    assert profile.overlays == ("common", "host", "gpu-container-node")
    passthrough = (overlay / "modprobe.d/golem-gpu-passthrough.conf").read_text()
    assert not [line for line in passthrough.splitlines() if not line.startswith("#")]
    assert "modprobe.blacklist=nouveau" in profile.kernel_cmdline


def test_a_failed_compile_keeps_make_log_in_the_stage_log(config: BuildConfig,
                                                           tmp_path: Path) -> None:
    runner = recording_compile(tmp_path)
    build = "var/lib/dkms/nvidia-current-open/550.163.01/build"

    def failing(argv: tuple[str, ...]) -> None:
        root = Path(runner.argvs[0][-1])
        (root / build).mkdir(parents=True)
        (root / build / "make.log").write_text("cc ...\nnvidia/os.c:12:3: error: boom\n")
        runner.responses[("chroot", str(root), "dkms")] = (10, "")

    old = runner.side_effects[("chroot",)]
    runner.side_effects[("chroot",)] = lambda argv: failing(argv) if argv[2] == "dkms" \
        else old(argv)
    out = tmp_path / "cache" / "out"
    with ExitStack() as stack, pytest.raises(BuildError) as err:
        modules_stage("nvidia-open").run(context(config, out, runner, stack, RESOLVED,
                                                 bootstrap=tmp_path / "boot"))
    assert err.value.problem == ("dkms build of nvidia-current-open/550.163.01 for Linux "
                                 f"{KREL} failed: nvidia/os.c:12:3: error: boom")
    assert "error: boom" in (out / "log").read_text()
