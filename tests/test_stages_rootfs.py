"""The rootfs stages' command sequences and file handling, with a recording runner."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from builder.config import BuildConfig, make_config
from builder.errors import BuildError
from builder.stage import StageContext
from stages.bootstrap import BootstrapStage
from stages.overlay import OverlayStage, install_units, render, template_context, wanted_by
from stages.packages import PackagesStage, debian_sources, remove_build_secrets
from stages.squashfs import BaseSquashfsStage, kernel_and_initrd
from tests.fakes import RecordingRunner


@pytest.fixture
def config(fake_project: Path, tmp_path: Path) -> BuildConfig:
    return make_config(fake_project, "gpu-node", "1.0", tmp_path / "tmp", tmp_path / "work")


def context(config: BuildConfig, output: Path, runner: RecordingRunner, stack: ExitStack,
            **inputs: Path) -> StageContext:
    output.mkdir(parents=True, exist_ok=True)
    return StageContext(config=config, output=output, inputs=inputs, runner=runner,
                        stack=stack, log_path=output / "log", progress=lambda m: None)


def test_bootstrap_argv(config: BuildConfig, tmp_path: Path) -> None:
    runner = RecordingRunner()
    with ExitStack() as stack:
        BootstrapStage().run(context(config, tmp_path / "out", runner, stack))
    assert runner.argvs == [(
        "mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase",
        "--arch=amd64", "--components=main,contrib,non-free,non-free-firmware",
        "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
        "--skip=check/empty,cleanup/apt/cache,cleanup/apt/lists",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "trixie", str(tmp_path / "out/rootfs"), "http://deb.debian.org/debian")]


def test_bootstrap_refuses_to_run_without_the_archive_keyring(
        config: BuildConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.bootstrap

    monkeypatch.setattr(stages.bootstrap, "DEBIAN_KEYRING", str(tmp_path / "absent.gpg"))
    with pytest.raises(BuildError, match="keyring .* is missing.*apt-get install "
                                         "debian-archive-keyring"):
        BootstrapStage().preflight(config)


def test_the_archive_keyring_is_part_of_the_bootstrap_key(config: BuildConfig) -> None:
    assert BootstrapStage().input_files(config) == [
        Path("/usr/share/keyrings/debian-archive-keyring.gpg")]


def fake_bootstrap(root: Path) -> None:
    for sub in ("etc/apt", "etc/ssh", "usr/sbin", "var/lib/dbus", "var/lib/apt/lists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list").write_text("deb http://x trixie main\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("SECRET")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef\n")
    (root / "var/lib/apt/lists/deb.debian.org_dists_trixie_Release").write_text("x")


def test_packages_sequence_mounts_installs_and_unmounts(config: BuildConfig,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = RecordingRunner(responses={("chroot",): (0, "")})

    def copy(argv: tuple[str, ...]) -> None:  # stands in for cp -a
        fake_bootstrap(Path(argv[-1]))

    runner.side_effects[("cp",)] = copy
    with ExitStack() as stack:
        PackagesStage().run(context(config, out, runner, stack,
                                    bootstrap=tmp_path / "boot"))
    root = str(out / "rootfs")
    programs = [a[0] if a[0] != "chroot" else f"chroot {a[2]}" for a in runner.argvs]
    assert programs == [
        "cp", "mount", "mount", "mount", "mount", "mount",
        "chroot apt-get", "chroot debconf-set-selections",
        "mount",  # the package cache's lease
        # update-initramfs diverted while installing (no initramfs-tools here: no regeneration)
        "chroot dpkg-divert", "chroot apt-get", "chroot apt-get", "chroot dpkg-divert",
        "umount",
        "chroot useradd", "chroot passwd", "chroot dpkg-query", "chroot apt-get",
        "umount", "umount", "umount", "umount", "umount"]
    # downloads go through the shared package cache, bound over apt's archives
    assert runner.argvs[8][:2] == ("mount", "--bind")
    assert runner.argvs[8][-1] == root + "/var/cache/apt/archives"
    assert runner.argvs[13] == ("umount", root + "/var/cache/apt/archives")
    assert runner.argvs[8][2].startswith(str(config.tmp_dir / "packages" / f".tmp-{os.getpid()}-"))
    # base packages from the bootstrap get the archive's updates and security fixes
    assert runner.argvs[10][2:5] == ("apt-get", "dist-upgrade", "--yes")
    install = runner.argvs[11]
    assert install[2:6] == ("apt-get", "install", "--yes", "--no-install-recommends")
    assert "live-boot" in install and "network-manager" in install
    assert runner.argvs[14][-3:] == ("--groups", "sudo,kvm", "golem")
    assert runner.argvs[15][-2:] == ("--lock", "golem")
    # unmounted in reverse order of mounting
    mounted = [a[-1] for a in runner.argvs
               if a[0] == "mount" and not a[-1].endswith("apt/archives")]
    unmounted = [a[-1] for a in runner.argvs[14:] if a[0] == "umount"]
    assert unmounted == list(reversed(mounted))
    assert mounted[0] == root + "/proc"
    env = runner.calls[9].env or {}
    assert env["DEBIAN_FRONTEND"] == "noninteractive"
    # no build-time secrets, policy-rc.d gone, deb822 sources
    assert not list((out / "rootfs/etc/ssh").glob("ssh_host_*"))
    assert (out / "rootfs/etc/machine-id").read_text() == ""
    assert not (out / "rootfs/usr/sbin/policy-rc.d").exists()
    assert not (out / "rootfs/etc/apt/sources.list").exists()
    sources = (out / "rootfs/etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: trixie trixie-updates" in sources and "trixie-security" in sources


def test_debian_sources_without_security() -> None:
    text = debian_sources("sid", "http://m/debian", "", ("main",))
    assert "security" not in text and "Components: main" in text


def test_remove_build_secrets(tmp_path: Path) -> None:
    fake_bootstrap(tmp_path)
    remove_build_secrets(tmp_path)
    assert not (tmp_path / "var/lib/dbus/machine-id").exists()
    assert not list((tmp_path / "var/lib/apt/lists").iterdir())


def test_templates_render_profile_values(config: BuildConfig, fake_project: Path) -> None:
    ctx = template_context(config)
    base = fake_project / "rootfs/overlay/common"
    unit = render(base / "etc/systemd/system/golemwz.service.j2", ctx)
    assert "ConditionKernelCommandLine=!skip_autostart" in unit
    assert "TTYPath=/dev/tty1" in unit and "OnFailure=golem-autologin.service" in unit
    provider = render(base / "etc/systemd/system/golem-provider.service.j2", ctx)
    assert "ConditionKernelCommandLine=!skip_autostart" in provider and "User=golem" in provider
    autologin = render(base / "etc/systemd/system/golem-autologin.service.j2", ctx)
    assert "--autologin golem" in autologin and "tty1" in autologin
    grub = render(base / "etc/default/grub.j2", ctx)
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="intel_iommu=on iommu=pt"' in grub
    assert "ttyS0" in grub
    assert "golemwz.log" in render(base / "etc/motd.j2", ctx)
    blacklist = (base / "etc/modprobe.d/golem-gpu-passthrough.conf").read_text()
    assert "blacklist nouveau" in blacklist
    udev = (base / "etc/udev/rules.d/99-golem-vfio.rules").read_text()
    assert 'SUBSYSTEM=="vfio"' in udev and 'GROUP="kvm"' in udev


def test_undefined_template_variable_is_an_error(tmp_path: Path,
                                                  config: BuildConfig) -> None:
    template = tmp_path / "x.j2"
    template.write_text("{{ no_such_value }}")
    with pytest.raises(BuildError, match="x.j2 failed to render"):
        render(template, template_context(config))


def test_wanted_by_and_install_units(tmp_path: Path) -> None:
    unit = "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\nRequiredBy=a.target\n"
    assert wanted_by(unit) == ["multi-user.target", "a.target"]
    (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/system/x.service").write_text(unit)
    install_units(tmp_path, ("x.service",))
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/x.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/x.service"
    with pytest.raises(BuildError, match="missing.service is not installed"):
        install_units(tmp_path, ("missing.service",))


def test_overlay_never_writes_through_hard_links(config: BuildConfig, tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    (packages / "rootfs/etc").mkdir(parents=True)
    (packages / "rootfs/etc/hostname").write_text("from-packages\n")
    (packages / "rootfs/usr/lib/systemd/system").mkdir(parents=True)
    for unit in ("NetworkManager.service", "ssh.service"):
        (packages / "rootfs/usr/lib/systemd/system" / unit).write_text(
            "[Install]\nWantedBy=multi-user.target\n")
    runner = RecordingRunner()

    def link_copy(argv: tuple[str, ...]) -> None:  # stands in for cp -a --link
        source, target = Path(argv[-2]), Path(argv[-1])
        for path in source.rglob("*"):
            dest = target / path.relative_to(source)
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, dest)

    runner.side_effects[("cp",)] = link_copy
    out = tmp_path / "out"
    with ExitStack() as stack:
        OverlayStage().run(context(config, out, runner, stack, packages=packages))
    assert (out / "rootfs/etc/hostname").read_text() == "golem-gpu-live\n"
    assert (packages / "rootfs/etc/hostname").read_text() == "from-packages\n"
    wants = out / "rootfs/etc/systemd/system/multi-user.target.wants"
    assert {"golemwz.service", "golem-provider.service", "ssh.service"} <= {
        p.name for p in wants.iterdir()}
    launcher = out / "rootfs/usr/bin/golemwz"
    assert os.access(launcher, os.X_OK) and "golemwz.cli" in launcher.read_text()
    assert (out / "rootfs/usr/lib/python3/dist-packages/golemwz/cli.py").exists()
    sudoers = out / "rootfs/etc/sudoers.d/golem"
    assert sudoers.stat().st_mode & 0o777 == 0o440


def test_overlay_inputs_include_templates_and_wizard(config: BuildConfig) -> None:
    names = {str(p.relative_to(config.project_root)) for p in OverlayStage().input_files(config)}
    assert "rootfs/overlay/common/etc/motd.j2" in names
    assert "rootfs/wizard/golemwz/cli.py" in names


def test_squashfs_finds_kernel_and_runs_mksquashfs(config: BuildConfig, tmp_path: Path) -> None:
    root = tmp_path / "packages/rootfs"
    (root / "boot").mkdir(parents=True)
    with pytest.raises(BuildError, match="no kernel"):
        kernel_and_initrd(root)
    (root / "boot/vmlinuz-6.12.0-amd64").write_text("kernel")
    with pytest.raises(BuildError, match="no initrd"):
        kernel_and_initrd(root)
    (root / "boot/initrd.img-6.12.0-amd64").write_text("initrd")
    runner = RecordingRunner()
    runner.side_effects[("mksquashfs",)] = lambda argv: Path(argv[2]).write_text("sq")
    out = tmp_path / "out"
    with ExitStack() as stack:
        BaseSquashfsStage().run(context(config, out, runner, stack,
                                        packages=tmp_path / "packages"))
    argv = runner.argvs[0]
    assert argv[:3] == ("mksquashfs", str(root), str(out / "live/filesystem.squashfs"))
    assert argv[argv.index("-comp") + 1] == "zstd"
    assert (out / "live/vmlinuz").read_text() == "kernel"
    assert (out / "live/initrd.img").read_text() == "initrd"


def test_packages_installs_golem_packages_from_the_signed_repository(
        fake_project: Path, tmp_path: Path) -> None:
    config = make_config(fake_project, "golem-provider", "1.0", tmp_path / "t", tmp_path / "w")
    repository = tmp_path / "repository"
    (repository / "repo/dists").mkdir(parents=True)
    (repository / "repo.gpg").write_bytes(b"KEYRING")
    out = tmp_path / "out"
    runner = RecordingRunner()
    seen_sources: list[str] = []

    def copy(argv: tuple[str, ...]) -> None:
        if argv[-1].endswith("rootfs"):
            fake_bootstrap(Path(argv[-1]))

    def update(argv: tuple[str, ...]) -> None:
        build_sources = out / "rootfs/etc/apt/sources.list.d/golem-build.sources"
        if build_sources.exists():
            seen_sources.append(build_sources.read_text())

    runner.side_effects[("cp",)] = copy
    runner.side_effects[("chroot", str(out / "rootfs"), "apt-get", "update")] = update
    stage = PackagesStage(with_repository=True)
    assert stage.depends == ("bootstrap", "repository")
    with ExitStack() as stack:
        stage.run(context(config, out, runner, stack, bootstrap=tmp_path / "b",
                          repository=repository))
    installs = [a for a in runner.argvs if a[2:4] == ("apt-get", "install")]
    assert len(installs) == 2
    assert {"golem-provider", "ya-runtime-vm-nvidia", "golemwz"} <= set(installs[1])
    # apt checks signatures against the repository's key: never trusted=yes
    assert seen_sources and "Signed-By: /usr/share/keyrings/golem-gpu-live.gpg" in seen_sources[0]
    assert "trusted" not in seen_sources[0]
    root = out / "rootfs"
    assert (root / "usr/share/keyrings/golem-gpu-live.gpg").read_bytes() == b"KEYRING"
    # the build-time repository and its source are gone from the image
    assert not (root / "var/lib/golem-live/build-repo").exists()
    assert not (root / "etc/apt/sources.list.d/golem-build.sources").exists()


def test_image_modes_do_not_depend_on_the_checkout() -> None:
    from stages.overlay import image_mode

    assert image_mode("etc/sudoers.d/golem", 0o100644) == 0o440
    assert image_mode("usr/bin/tool", 0o100775) == 0o755
    assert image_mode("etc/motd", 0o100664) == 0o644
