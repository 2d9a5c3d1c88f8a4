"""Where the configuration files live: the `Golem conf storage` partition.

On the live system /home is on the RAM overlay, so a file kept only in ~golem is
gone at the next boot. The saved configuration is therefore `golemwz-saved.toml`
on the conf partition (FAT, next to the first-boot golemwz.toml), and
~golem/.golemwz.toml is a symlink to it, made once the partition is mounted.
The partition is mounted (with `uid=golem` and private permissions: the file
holds the account and SSH keys) while the wizard runs. After a successful run it
stays mounted, read-only, so the symlink resolves; after a failure it is
unmounted (see close()). The crypt hash of golem's generated password is kept
there too (`golemwz-password.hash`), so the password survives reboots.

Booted from the ISO there is no conf partition: the saved file is then a plain
~golem/.golemwz.toml, for this session only, and the log says so once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from golemwz import accounts
from golemwz.bootdisk import boot_disk
from golemwz.config import Settings, read_text, read_toml, save_atomically, write_atomically
from golemwz.layout import CONF_PARTLABEL, CONF_PARTUUID, GOLEM_USER, SystemLayout
from golemwz.report import Reporter
from golemwz.runner import Runner
from golemwz.storage import own_partition, read_block_devices

# FAT has no owners or modes: these make every file golem's and private, which
# is also what lets save_atomically's chmod 0600 succeed (vfat refuses a chmod
# that its mount options cannot represent). Anyone who held the stick may have
# put programs there: nothing on it is ever executed, setuid or a device node.
CONF_SAFETY_OPTIONS = "noexec,nosuid,nodev"
CONF_MOUNT_OPTIONS = f"uid={GOLEM_USER},gid={GOLEM_USER},umask=0077,{CONF_SAFETY_OPTIONS}"


@dataclass
class ConfStore:
    layout: SystemLayout
    runner: Runner
    reporter: Reporter
    on_partition: bool = False  # the conf partition is mounted on layout.conf_mount_dir
    mounted_here: bool = False  # ...by us, so we unmount it at exit
    made_writable: bool = False  # it was mounted read-only (an earlier run): remounted rw
    # The disk booted from ("sda"), None if unknown: whose conf and storage are ours.
    boot_disk: str | None = None

    def open(self) -> None:
        """Mount the conf partition when there is one; link ~/.golemwz.toml to its file."""
        self.boot_disk = boot_disk(self.layout.mountinfo_file, self.layout.sysfs_root)
        self.reporter.detail(f"booted from: /dev/{self.boot_disk}" if self.boot_disk
                             else "the disk booted from is unknown")
        # Never another stick's: it may be a copy of this image with the same labels.
        # By label or by the PARTUUID GOLEM's imager looks for (golem-gpu-imager
        # src/disk.rs CONFIG_PARTITION_UUID), which the image build gives it.
        partition = own_partition(read_block_devices(self.runner), CONF_PARTLABEL,
                                  self.boot_disk, self.reporter, partuuid=CONF_PARTUUID)
        if partition is None:
            self.reporter.warn(
                f"no '{CONF_PARTLABEL}' partition (booted from the ISO?): the configuration "
                f"is kept in {self.layout.saved_config}, which is lost at reboot")
            return
        mount_dir = self.layout.conf_mount_dir
        mount_dir.mkdir(parents=True, exist_ok=True)
        if self.runner.run(["mountpoint", "--quiet", str(mount_dir)],
                           check=False).returncode != 0:
            self.runner.run(["mount", "-o", CONF_MOUNT_OPTIONS, partition.path, str(mount_dir)])
            self.mounted_here = True
        elif not os.access(mount_dir, os.W_OK):  # EROFS: left read-only by a successful run
            self.runner.run(["mount", "-o", f"remount,rw,{CONF_SAFETY_OPTIONS}",
                             str(mount_dir)])
            self.made_writable = True
        self.on_partition = True
        if self.layout.conf_saved_config.exists():
            self.link_home()

    def close(self, keep_mounted: bool = False) -> None:
        """Unmount what open() mounted, or with `keep_mounted` leave it mounted read-only.

        Kept after a successful run so ~/.golemwz.toml is not a dangling link. Read-only,
        because a provider node is often switched off at the plug: a rw vfat stays marked
        dirty (and a FAT write may be half done) until unmounted, while remounting ro
        flushes and clears the dirty flag, leaving the FAT as clean as after umount.
        To edit the file: `sudo mount -o remount,rw /run/golemwz/conf`, or run golemwz.
        After a failure it is unmounted as before: the user at tty1 may take the stick
        out to fix golemwz.toml on another machine."""
        mount_dir = str(self.layout.conf_mount_dir)
        if (self.mounted_here or self.made_writable) and keep_mounted:
            self.runner.run(["mount", "-o", "remount,ro", mount_dir], check=False)
        elif self.mounted_here:
            self.runner.run(["umount", mount_dir], check=False)
        elif self.made_writable:
            self.runner.run(["mount", "-o", "remount,ro", mount_dir], check=False)
        self.mounted_here = self.made_writable = False

    @property
    def persistent_dir(self) -> Path | None:
        """Where state that must survive a power cut goes (the grow's table backup)."""
        return self.layout.conf_mount_dir if self.on_partition else None

    @property
    def saved_path(self) -> Path:
        """The real file the saved configuration is written to."""
        if self.on_partition:
            return self.layout.conf_saved_config
        return self.layout.saved_config

    def read_saved(self) -> tuple[dict[str, object] | None, Path]:
        """The saved configuration's table (None if there is none) and where it was read.

        A plain ~/.golemwz.toml (written in an earlier run of this session without
        the partition) is read when the partition has no saved file yet; the next
        save moves it there.
        """
        for path in dict.fromkeys([self.saved_path, self.layout.saved_config]):
            data = read_toml(path, "saved configuration")
            if data is not None:
                return data, path
        return None, self.saved_path

    def read_first_boot(self) -> dict[str, object] | None:
        if not self.on_partition:
            return None
        return read_toml(self.layout.first_boot_config, "first-boot golemwz.toml")

    def read_first_boot_env(self) -> str | None:
        """golem.env's text (GOLEM's imager writes it with golemwz.toml), None without."""
        if not self.on_partition:
            return None
        return read_text(self.layout.first_boot_env, "golem.env")

    def save(self, settings: Settings) -> Path:
        """Write atomically where it persists; OSError if that fails."""
        save_atomically(settings, self.saved_path)
        if self.on_partition:
            self.link_home()
        else:
            self.runner.run(["chown", f"{GOLEM_USER}:{GOLEM_USER}", str(self.saved_path)])
        return self.saved_path

    def restore_password(self) -> bool:
        """Set the password generated at an earlier boot from its saved hash, if any.

        Neither the hash nor a malformed file's content is ever logged."""
        if not self.on_partition:
            return False
        path = self.layout.conf_password_hash
        try:
            crypt_hash = path.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            return False
        except OSError as error:
            self.reporter.warn(f"cannot read {path}: {error.strerror}; "
                               "a new password is generated")
            return False
        if not accounts.is_crypt_hash(crypt_hash):
            self.reporter.warn(f"{path} is not a crypt hash ($id$...): ignored; "
                               "a new password is generated")
            return False
        accounts.restore_password_hash(self.runner, GOLEM_USER, crypt_hash)
        return True

    def keep_password_hash(self) -> bool:
        """Save the new password's crypt hash (never the password) where it persists;
        False (with a warning) when it could not be. Booted from the ISO nothing
        persists, as for the configuration."""
        if not self.on_partition:
            return False
        path = self.layout.conf_password_hash
        try:
            crypt_hash = accounts.read_password_hash(self.layout.shadow_file, GOLEM_USER)
            if crypt_hash is None:
                raise OSError(f"no crypt hash for {GOLEM_USER}")
            write_atomically(f"{crypt_hash}\n".encode(), path)
        except OSError as error:
            self.reporter.warn(f"the password hash was not saved to {path} "
                               f"({error.strerror or error}): "
                               "a new password will be generated at the next boot")
            return False
        return True

    def delete_first_boot(self) -> None:
        """Both first-boot files: their values are in the saved configuration now, and a
        stale golem.env must not slip under a golemwz.toml written later by hand."""
        self.layout.first_boot_config.unlink(missing_ok=True)
        self.layout.first_boot_env.unlink(missing_ok=True)

    def link_home(self) -> None:
        """Make ~/.golemwz.toml a symlink to the file on the partition, replacing it atomically."""
        link = self.layout.saved_config
        target = self.layout.conf_saved_config
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".golemwz-link-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        os.replace(temporary, link)
        self.reporter.detail(f"{link} -> {target}")
