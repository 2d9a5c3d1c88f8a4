"""Where things are on the image: partition names and file paths, in one place.

Tests build a SystemLayout under a temporary directory with `under(root)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The image build gives `Golem storage` this fixed PARTUUID so the wizard can
# recognise it on any machine; only this partition is ever grown.
GOLEM_STORAGE_PARTUUID = "9b06e23f-74bb-4c49-b83d-d3b0c0c2bb01"
# GOLEM's imager (golem-gpu-imager) writes golemwz.toml and golem.env into the
# partition with this PARTUUID; the image build gives it to `Golem conf storage`.
CONF_PARTUUID = "33b921b8-edc5-46a0-8baa-d0b7ad84fc71"
GOLEM_STORAGE_PARTLABEL = "Golem storage"
CONF_PARTLABEL = "Golem conf storage"
ROOT_PARTLABEL = "Golem root filesystem"
FIRST_BOOT_FILE_NAME = "golemwz.toml"
# The provider environment golem-gpu-imager writes beside golemwz.toml, KEY=VALUE lines
# (src/disk.rs write_configuration_to_partition; configuration.rs to_env_content).
GOLEM_ENV_FILE_NAME = "golem.env"
# The saved configuration, on the conf partition: /home is in RAM on the live system.
SAVED_FILE_NAME = "golemwz-saved.toml"
# The crypt hash of golem's generated password, next to it: /etc/shadow is in RAM too.
PASSWORD_HASH_FILE_NAME = "golemwz-password.hash"
GOLEM_USER = "golem"
PROVIDER_SERVICE = "golem-provider.service"
# The directory on the storage partition that becomes ~golem/.local.
STORAGE_SUBDIR = "golem-gpu-live"
# What takes tty1 after a successful run (golem-autologin.service after a failure).
LOGIN_SERVICE = "golem-login.service"


LEGACY_BIOS_WARNING = (
    "this machine booted in legacy BIOS mode, not UEFI: GPU passthrough is less reliable "
    "and Secure Boot is off; switch the firmware setup to UEFI boot")


def legacy_bios_boot(sysfs_root: Path) -> bool:
    """True when the machine did not boot through UEFI: the kernel makes
    /sys/firmware/efi only on a UEFI boot. Upstream warns about it on screen
    (golem-gpu-live rootfs/golemwz.py run(), their issue #29)."""
    return not (sysfs_root / "firmware/efi").is_dir()


@dataclass(frozen=True)
class SystemLayout:
    sysfs_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    golem_home: Path = Path("/home/golem")
    bin_dirs: tuple[Path, ...] = (Path("/usr/local/bin"), Path("/usr/bin"), Path("/bin"))
    yagna_plugins_dir: Path = Path("/usr/lib/yagna/plugins")
    # The manifest bundle (whitelist/, certs/, golem-certs/) of ya-installer-resources:
    # its deb installs it here (GOLEM's ya-installer-resources packaging; upstream
    # golem-gpu-live rootfs/golemwz.py passes this path to `golemsp manifest-bundle add`).
    installer_resources_dir: Path = Path("/usr/lib/yagna/installer")
    # Read by golem-provider.service through `EnvironmentFile=-`.
    provider_env_file: Path = Path("/etc/default/golem-provider")
    # On the root filesystem, not on the storage being grown: survives the grow.
    state_dir: Path = Path("/var/lib/golemwz")
    conf_mount_dir: Path = Path("/run/golemwz/conf")
    storage_mount_dir: Path = Path("/mnt/golem-storage")
    pci_ids_file: Path = Path("/usr/share/misc/pci.ids")
    shadow_file: Path = Path("/etc/shadow")
    # With sysfs, tells the disk booted from (see bootdisk): two sticks of one image
    # have the same labels and PARTUUIDs.
    mountinfo_file: Path = Path("/proc/self/mountinfo")
    hostname_file: Path = Path("/etc/hostname")
    # Read by pam_motd at the tty1 login: names the error after a failure.
    motd_notice: Path = Path("/run/motd.d/golemwz")
    # Read by agetty above the login prompt after a successful run.
    issue_notice: Path = Path("/etc/issue.d/golemwz.issue")
    # golem-provider.service starts only when this exists (ConditionPathExists=):
    # systemd hears READY=1 after a failed run too, so the boot need not wait.
    provider_ready_marker: Path = Path("/run/golemwz/provider-configured")
    # A non-GOLEM profile's steps and keys (profile_spec.py); absent on GOLEM's images.
    profile_spec_file: Path = Path("/usr/share/golemwz/profile.toml")
    # Where a profile's steps write absolute paths of its spec (/etc/..., /run/...).
    root: Path = Path("/")
    # Where live-boot persistence is asked for (the boot entry) and the image's own
    # layers (the squashfs mounts live-boot keeps): see golemwz.updates.
    kernel_cmdline_file: Path = Path("/proc/cmdline")
    live_rootfs_dir: Path = Path("/run/live/rootfs")

    @classmethod
    def under(cls, root: Path) -> SystemLayout:
        """The same layout with every path below `root` (tests, chroots)."""
        default = cls()
        return cls(
            sysfs_root=root / "sys",
            dev_root=root / "dev",
            golem_home=root / "home/golem",
            bin_dirs=tuple(root / str(d).lstrip("/") for d in default.bin_dirs),
            yagna_plugins_dir=root / "usr/lib/yagna/plugins",
            installer_resources_dir=root / "usr/lib/yagna/installer",
            provider_env_file=root / "etc/default/golem-provider",
            state_dir=root / "var/lib/golemwz",
            conf_mount_dir=root / "run/golemwz/conf",
            storage_mount_dir=root / "mnt/golem-storage",
            pci_ids_file=root / "usr/share/misc/pci.ids",
            shadow_file=root / "etc/shadow",
            mountinfo_file=root / "proc/self/mountinfo",
            hostname_file=root / "etc/hostname",
            motd_notice=root / "run/motd.d/golemwz",
            issue_notice=root / "etc/issue.d/golemwz.issue",
            provider_ready_marker=root / "run/golemwz/provider-configured",
            profile_spec_file=root / "usr/share/golemwz/profile.toml",
            root=root,
            kernel_cmdline_file=root / "proc/cmdline",
            live_rootfs_dir=root / "run/live/rootfs",
        )

    def system_path(self, absolute: str) -> Path:
        """An absolute path of the running system (a profile spec's) under `root`."""
        return self.root / absolute.lstrip("/")

    @property
    def saved_config(self) -> Path:
        """The user-visible saved configuration: a symlink to conf_saved_config when
        the conf partition exists, else a plain file (ISO: lost at reboot)."""
        return self.golem_home / ".golemwz.toml"

    @property
    def conf_saved_config(self) -> Path:
        return self.conf_mount_dir / SAVED_FILE_NAME

    @property
    def conf_password_hash(self) -> Path:
        return self.conf_mount_dir / PASSWORD_HASH_FILE_NAME

    @property
    def log_file(self) -> Path:
        return self.golem_home / "golemwz.log"

    @property
    def local_dir(self) -> Path:
        return self.golem_home / ".local"

    @property
    def user_plugins_dir(self) -> Path:
        return self.local_dir / "lib/yagna/plugins"

    @property
    def terms_tag(self) -> Path:
        """GOLEM's installer's mark of accepted terms (see provider.write_terms_tag)."""
        return self.local_dir / "share/ya-installer/terms/testnet-01.tag"

    @property
    def authorized_keys(self) -> Path:
        return self.golem_home / ".ssh/authorized_keys"

    @property
    def first_boot_config(self) -> Path:
        return self.conf_mount_dir / FIRST_BOOT_FILE_NAME

    @property
    def first_boot_env(self) -> Path:
        return self.conf_mount_dir / GOLEM_ENV_FILE_NAME

    def find_program(self, name: str) -> Path | None:
        """Path lookup over bin_dirs, so tests can point it at a fake root."""
        for directory in self.bin_dirs:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        return None

    def golem_installed(self) -> bool:
        return self.find_program("golemsp") is not None
