"""The twelve steps of the wizard, in the reference's order.

A value already known (flag, saved file, first-boot file) is never asked for;
a missing one is asked for or, under non_interactive_install, takes its
config.UNATTENDED_DEFAULTS value (GOLEM's imager leaves those keys out) or is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from golemwz import accounts, final_screen, network, profile_steps, provider, storage, updates
from golemwz.boot_console import NullScreen, Screen
from golemwz.config import (
    AUTO,
    UNATTENDED_DEFAULTS,
    VALIDATORS,
    Settings,
    parse_first_boot,
    parse_layer,
)
from golemwz.confstore import ConfStore
from golemwz.errors import ConfigError, WizardError
from golemwz.layout import (
    CONF_PARTLABEL,
    GOLEM_USER,
    LEGACY_BIOS_WARNING,
    LOGIN_SERVICE,
    PROVIDER_SERVICE,
    SystemLayout,
    legacy_bios_boot,
)
from golemwz.pci import PciAddress, device_exists, survey_gpus
from golemwz.profile_spec import load_spec
from golemwz.report import Reporter
from golemwz.runner import Runner
from golemwz.ui import UI
from golemwz.vfio import SysfsWriter, bind_to_vfio, release_console_framebuffer, write_sysfs

TERMS = (
    "By running a GOLEM provider you declare that you have read, understood and accept "
    "the disclaimer and privacy warning at https://handbook.golem.network/see-also/terms\n\n"
    "Do you accept these terms of use?"
)
SUGGESTED_GLM_PER_HOUR = "0.25"
# A single-GPU machine loses its screen when the boot GPU goes to vfio-pci: the
# final screen (with the password) waits this long for a key first. Long enough
# to write a password down; short enough that an unattended node is up soon.
FRAMEBUFFER_DEADLINE_SECONDS = 180


@dataclass(frozen=True)
class Options:
    """Command-line switches that change what the wizard does, not what it configures."""

    debug: bool = False
    relax_gpu_isolation: bool = True
    insecure: bool = False
    storage_only: bool = False
    passthrough: bool = True
    save: bool = True


@dataclass(frozen=True)
class Services:
    """Everything the wizard acts through; tests pass fakes."""

    layout: SystemLayout
    runner: Runner
    ui: UI
    reporter: Reporter
    sysfs_write: SysfsWriter = write_sysfs
    new_password: Callable[[], str] = accounts.generate_password
    # At boot the VT in front of the person (boot_console.BootScreen).
    screen: Screen = field(default_factory=NullScreen)


@dataclass
class Wizard:
    options: Options
    flags: Settings
    services: Services
    settings: Settings = field(default_factory=Settings)
    first_boot_read: bool = False
    save_attempted: bool = False
    # Generated at this boot: on the final screen. Its hash is kept on the conf
    # partition only once it was on screen, so a password nobody can have seen
    # (the run was cut short before) is not kept: the next boot makes a new one.
    new_password: str | None = None
    password_kept: bool = False
    password_note: str = "not set"
    configured: list[str] = field(default_factory=list)  # for the final screen
    finished: bool = False  # the final screen and the login notes are done
    framebuffer_released: bool = False  # the screen is gone: nothing more to show

    def __post_init__(self) -> None:
        self.store = ConfStore(self.layout, self.services.runner, self.services.reporter)
        self.spec = load_spec(self.layout.profile_spec_file)  # None: GOLEM's wizard

    @property
    def layout(self) -> SystemLayout:
        return self.services.layout

    @property
    def non_interactive(self) -> bool:
        return bool(self.settings.non_interactive_install)

    def unattended(self) -> bool:
        """True when no question will be asked, so nothing should wait for a key."""
        required = ["accepted_terms", "storage_partition", "gpu_pci_slot"]
        if self.spec is not None:
            required = profile_steps.asked_keys(self.spec)
        elif self.layout.golem_installed():
            required += ["glm_account", "glm_per_hour", "init_price"]
        complete = all(getattr(self.settings, key) is not None for key in required)
        return self.non_interactive or complete

    def step(self, summary: str) -> None:
        self.services.reporter.step(summary)

    # -- configuration -------------------------------------------------------

    def load_configuration(self) -> None:
        """Flags over the saved file over the first-boot file."""
        saved_data, saved_path = self.store.read_saved()
        first_data = env_text = None
        if saved_data is None:  # none after the imager reformatted the conf partition
            first_data = self.store.read_first_boot()
            env_text = self.store.read_first_boot_env()
        else:
            self.step(f"read saved configuration {saved_path}")
            for unread in (self.layout.first_boot_config, self.layout.first_boot_env):
                if unread.exists():
                    self.services.reporter.detail(
                        f"{saved_path} exists: the first-boot {unread.name} is not read")
        saved, saved_errors = parse_layer(saved_data or {}, "~/.golemwz.toml", self.spec)
        first, first_errors = parse_first_boot(first_data, env_text, self.spec)
        self.settings = self.flags.merged_over(saved.merged_over(first))
        read = [name for name, text in (("golemwz.toml", first_data), ("golem.env", env_text))
                if text is not None]
        if read:
            self.first_boot_read = True
            self.step(f"read first-boot configuration {' and '.join(read)} from {CONF_PARTLABEL}")
        for error in saved_errors + first_errors:
            if self.non_interactive:
                raise error
            # The bad key was dropped; its question comes again in its step.
            self.services.ui.message("Configuration error", error.line())
            self.services.reporter.warn(error.line())

    def obtain(self, key: str, ask: Callable[[], object | None], fix: str,
               unattended: Callable[[], object | None] | None = None) -> Any:
        """The configured value of `key`, or a valid answer from the user; unattended,
        the default of UNATTENDED_DEFAULTS from `unattended()` (None: there is none)."""
        current = getattr(self.settings, key)
        if current is not None:
            return current
        default = unattended() if self.non_interactive and unattended else None
        if default is not None:
            self.settings = self.settings.with_value(key, default)
            self.step(f"{key} is not set (non_interactive_install): {UNATTENDED_DEFAULTS[key]}")
            return default
        if self.non_interactive:
            raise ConfigError(key, f"{key} is missing and non_interactive_install is true",
                              f"add it to golemwz.toml, e.g. {fix}")
        while True:
            answer = ask()
            if answer is None:
                raise WizardError(f"cancelled while asking for {key}", "run golemwz again")
            try:
                value = VALIDATORS[key](key, answer)
            except ConfigError as error:
                self.services.ui.message("Invalid value", error.line())
                continue
            self.settings = self.settings.with_value(key, value)
            return value

    # -- the steps -----------------------------------------------------------

    def run(self) -> None:
        """All the steps, then the final screen, with the conf partition mounted from
        start to exit (the password hash is written there after the final screen)."""
        completed = False  # only a full run leaves the conf partition mounted (read-only)
        self.store.open()
        try:
            self.load_configuration()
            if self.options.storage_only:
                self.configure_storage()
                return
            try:
                if self.spec is None:
                    self.run_steps()
                else:
                    profile_steps.run_steps(self, self.spec)
            except WizardError as error:
                self.keep_configuration_after(error)
                self.finish(error)
                raise
            except Exception as bug:  # cli logs the traceback; the screen says what broke
                self.finish(WizardError(f"internal error: {type(bug).__name__}: {bug}",
                                        f"please report it with {final_screen.LOG_NAME}"))
                raise
            completed = True
            self.finish(None)
        finally:
            self.store.close(keep_mounted=completed)

    def notice(self, title: str, text: str) -> None:
        """A warning on screen and in the log; it waits for OK only when questions are
        being answered anyway (an unattended boot must not stop for it)."""
        self.services.reporter.warn(text)
        (self.services.ui.info if self.unattended() else self.services.ui.message)(title, text)

    def run_steps(self) -> None:
        if legacy_bios_boot(self.layout.sysfs_root):
            self.notice("Legacy BIOS", LEGACY_BIOS_WARNING)
        if self.settings.configuration_server:
            self.notice("Configuration server", f"configuration_server "
                        f"{self.settings.configuration_server} is kept, but this image does "
                        "not poll it yet: the configuration comes from golemwz.toml")
        self.accept_terms()
        self.configure_storage()
        self.configure_access()
        self.check_network()
        golem = self.layout.golem_installed()
        if not golem:
            self.step("GOLEM provider packages are not installed (gpu-node profile): "
                      "skipping the GLM, runtime and preset steps")
        else:
            self.configure_glm()
        gpus, vfio_devices = self.select_gpus()
        if golem:
            self.configure_provider(gpus)
        # Saved before the devices move: on a single-GPU machine the final screen is
        # shown before that, and it should say the configuration is kept.
        self.save_configuration()
        if self.options.passthrough:
            self.attach_vfio(gpus, vfio_devices)
        else:
            self.step("--no-passthrough: devices left with their drivers")
        if golem:
            self.start_provider()
        self.step("done")

    def start_provider(self) -> None:
        marker = self.layout.provider_ready_marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("configured by golemwz\n")  # the unit's ConditionPathExists=
        # --no-block: the provider unit is ordered after ours; waiting would deadlock.
        self.services.runner.run(["systemctl", "start", "--no-block", PROVIDER_SERVICE])
        self.step(f"started {PROVIDER_SERVICE}")
        self.configured.append(f"{PROVIDER_SERVICE} started (runtime {provider.RUNTIME_NAME}, "
                               f"preset {provider.PRESET_NAME})")

    # -- the final screen ----------------------------------------------------

    def final_report(self, error: WizardError | None,
                     framebuffer_seconds: int | None = None) -> final_screen.FinalReport:
        try:  # now, not at the network step: DHCP may have finished since
            addresses = network.ip_addresses(self.services.runner)
        except WizardError:
            addresses = []
        try:
            hostname = self.layout.hostname_file.read_text().strip() or "this machine"
        except OSError:
            hostname = "this machine"
        return final_screen.FinalReport(
            error=error, password=self.new_password, password_note=self.password_note,
            node_name=self.settings.glm_node_name, hostname=hostname, addresses=addresses,
            configured=tuple(self.configured), golem=self.layout.golem_installed(),
            holds=self.services.screen.holds, framebuffer_seconds=framebuffer_seconds,
            profile=self.spec.name if self.spec else None)

    def draw_final_screen(self, report: final_screen.FinalReport) -> None:
        """Draw the last screen; once it is up, the new password may be kept."""
        try:
            # Not a message box: the boot must go on while it waits for a key
            # (hold_final_screen), and a message box would wait before that.
            self.services.ui.info(final_screen.title(report), final_screen.body(report))
        except Exception as ui_broken:  # the screen is a courtesy; the log has everything
            self.services.reporter.detail(f"could not draw the final screen: {ui_broken}")
            if self.new_password is not None and not self.password_kept:
                self.services.reporter.warn("the new password could not be shown: it is not "
                                            "kept, the next boot generates another one")
            return
        self.step("final screen shown on " + self.services.screen.name
                  + (" with the password generated at this boot" if report.password else ""))
        if self.new_password is not None and not self.password_kept:
            self.password_kept = True
            self.keep_password_hash()

    def finish(self, error: WizardError | None) -> None:
        """The final screen (unless the GPU took it) and the notes for the tty1 login."""
        if self.finished:
            return
        self.finished = True
        report = self.final_report(error)
        notes = ((self.layout.motd_notice, final_screen.motd_text(error) if error else None),
                 (self.layout.issue_notice, None if error else final_screen.issue_text(report)))
        for path, text in notes:
            try:
                final_screen.write_notice(path, text)
            except OSError as error_writing:
                self.services.reporter.warn(f"cannot write {path}: {error_writing}")
        if not self.framebuffer_released:
            self.draw_final_screen(report)

    def hold_final_screen(self, failed: bool) -> None:
        """At boot: let the boot go on, keep the final screen until a key, then hand the
        VT over: the tty1 autologin (golemwz.service's OnFailure=) or the login prompt."""
        screen = self.services.screen
        if not screen.holds:
            return
        outcome = "failed" if failed else "configured this node"
        # READY=1 on failure too: the unattended boot must not wait for a key. The
        # provider unit then still starts only after success (provider_ready_marker).
        screen.notify(f"READY=1\nSTATUS=golemwz {outcome}; its last screen waits for a key "
                      f"on {screen.name}")
        if not self.framebuffer_released:
            pressed = screen.wait_for_key(None, lambda: self.step(
                f"the final screen stays on {screen.name} until a key is pressed"))
            if pressed:
                self.step(f"a key was pressed on {screen.name}")
            screen.clear()  # the password must not stay behind the login
        if not failed:
            self.services.runner.run(["systemctl", "start", "--no-block", LOGIN_SERVICE],
                                     check=False)
            self.step(f"started {LOGIN_SERVICE} on {screen.name}")

    def accept_terms(self) -> None:
        ui = self.services.ui
        accepted = self.obtain("accepted_terms", lambda: ui.confirm("Terms of use", TERMS),
                               "accepted_terms = true")
        if not accepted:
            raise WizardError("the terms of use were not accepted",
                              "the provider cannot run without them; run golemwz again")
        self.step("terms of use accepted")

    def configure_storage(self) -> None:
        runner, ui = self.services.runner, self.services.ui
        boot_disk = self.store.boot_disk  # another stick of this image looks the same
        devices = storage.read_block_devices(runner)
        candidates = storage.storage_candidates(devices, self.layout.storage_mount_dir,
                                                boot_disk, self.services.reporter)
        if not candidates:
            raise WizardError("no partition with a Linux filesystem (ext4, xfs, btrfs) found",
                              "write the image again, or add a disk with such a partition")
        by_uuid = {c.partuuid: c for c in candidates}
        configured = self.settings.storage_partition
        if configured is not None and configured not in by_uuid:
            error = ConfigError("storage_partition",
                                f"storage_partition = '{configured}': no such partition here",
                                "plug that disk in, or remove the key to choose again")
            if self.non_interactive:
                raise error
            ui.message("Storage", error.line())
            self.settings = self.settings.with_value("storage_partition", None)
        choices = storage.storage_choices(candidates, devices, boot_disk)
        partuuid = self.obtain(
            "storage_partition",
            lambda: ui.choose_one("Persistent storage",
                                  "Where should the provider keep its data?", choices),
            f'storage_partition = "{candidates[0].partuuid}"',
            lambda: getattr(storage.boot_stick_storage(candidates, boot_disk), "partuuid", None))
        chosen = by_uuid[partuuid]
        if chosen.is_golem_storage() and storage.may_grow(chosen, boot_disk,
                                                          self.services.reporter):
            storage.grow_golem_storage(chosen, self.layout, runner, self.services.reporter,
                                       self.store.persistent_dir)
            # Sizes as they are now: the list above was read before the partition grew.
            chosen = storage.find_path(storage.read_block_devices(runner),
                                       chosen.path) or chosen
        storage.mount_storage(chosen, self.layout, runner, self.services.reporter)
        self.configured.append(f"storage {chosen.title()} as ~{GOLEM_USER}/.local")
        if storage.boot_stick_storage([chosen], boot_disk) is not None:
            updates.keep_updates(self.layout, self.services.reporter)

    def configure_access(self) -> None:
        runner = self.services.runner
        if accounts.password_is_set(runner, GOLEM_USER):
            self.step(f"the password of {GOLEM_USER} was set before; kept")
            self.password_note = "set before this run, unchanged"
        elif self.store.restore_password():
            self.step(f"password restored from {CONF_PARTLABEL}")
            self.password_note = "the one shown at an earlier boot"
        else:
            password = self.services.new_password()
            accounts.set_password(runner, GOLEM_USER, password)
            self.new_password = password  # on the final screen in any case
            if self.unattended():
                self.step(f"generated a password for {GOLEM_USER}: it is shown on the "
                          "final screen")
            else:
                text = (f"The password of user '{GOLEM_USER}' is:\n\n    {password}\n\n"
                        "Write it down now. The last screen shows it again.")
                self.services.ui.message("Password", text)
                self.step(f"generated a password for {GOLEM_USER} and showed it on screen")
                self.password_kept = True  # read and acknowledged
                self.keep_password_hash()
        if self.settings.ssh_keys:
            added = accounts.install_ssh_keys(self.layout.authorized_keys, self.settings.ssh_keys,
                                              runner, GOLEM_USER)
            self.step(f"SSH keys: {added} added to {self.layout.authorized_keys}")
            self.configured.append(f"SSH keys: {added} added, {len(self.settings.ssh_keys)} "
                                   "configured")

    def keep_password_hash(self) -> None:
        if self.store.keep_password_hash():
            self.step(f"password hash saved to {self.layout.conf_password_hash} on "
                      f"{CONF_PARTLABEL}: the password survives reboots")

    def check_network(self) -> None:
        ui, runner = self.services.ui, self.services.runner
        online = network.wait_for_network(
            runner, lambda percent, text: ui.progress("Network", text, percent))
        if not online:
            ui.progress("Network", "No network", 100)
            self.services.reporter.warn("NetworkManager reports no connection yet; "
                                        "the provider will retry once it is connected")
            self.configured.append("network: not connected yet")
            return
        addresses = network.ip_addresses(runner)
        shown = ", ".join(addresses) or "none"
        self.services.ui.info("Network", f"Connect with: ssh {GOLEM_USER}@ADDRESS\n\n{shown}")
        self.step(f"network is up; IP addresses: {shown}")

    def configure_glm(self) -> None:
        ui = self.services.ui
        self.obtain("glm_account",
                    lambda: ui.ask_text("GLM account", "Account (0x...) to receive payments "
                                        "(empty: the node's own wallet):"),
                    'glm_account = "0x..."')
        self.obtain("glm_per_hour",
                    lambda: ui.ask_text("GLM per hour", "Price of one hour of GPU use in GLM:",
                                        SUGGESTED_GLM_PER_HOUR),
                    f'glm_per_hour = "{SUGGESTED_GLM_PER_HOUR}"')
        self.obtain("init_price",
                    lambda: ui.ask_text("Initial price", "GLM charged when a task starts "
                                        "(0 for testing):", "0"),
                    'init_price = "0"', lambda: Decimal(0))
        account = self.settings.glm_account or "the node's own wallet"
        self.step(f"GLM account {account}, {self.settings.glm_per_hour} GLM "
                  f"per hour, initial price {self.settings.init_price}")
        self.configured.append(f"{self.settings.glm_per_hour} GLM per hour, initial price "
                               f"{self.settings.init_price}, to {account}")

    def select_gpus(self) -> tuple[tuple[PciAddress, ...], tuple[PciAddress, ...]]:
        """The chosen GPUs and every device that must go to vfio-pci with them."""
        layout, ui = self.layout, self.services.ui
        survey = survey_gpus(layout.sysfs_root, relax_bridges=self.options.relax_gpu_isolation,
                             pci_ids_file=layout.pci_ids_file)
        usable = survey.gpus if self.options.insecure else survey.isolated()
        if not usable:
            if survey.gpus:
                why = "none is isolated in its IOMMU group: " + "; ".join(
                    f"{r.gpu.address}: {r.reason}" for r in survey.gpus)
                fix = "--insecure ignores this at the cost of the host's safety"
            else:
                why = "this machine has no NVIDIA GPU (VGA or 3D controller)"
                fix = "install an NVIDIA card; `golemwz gpus` shows what the wizard sees"
            self.step(f"no compatible GPU: {why}")
            raise WizardError(f"no compatible GPU: {why}", fix)
        for report in usable:
            if not report.isolated:
                self.services.reporter.warn(f"--insecure: using {report.gpu.address} although "
                                            f"{report.reason}")
        usable_slots = {str(r.gpu.address) for r in usable}
        configured = self.settings.gpu_pci_slot
        if configured not in (None, AUTO):
            assert isinstance(configured, tuple)
            unusable = [str(a) for a in configured if str(a) not in usable_slots]
            if unusable:
                error = ConfigError("gpu_pci_slot",
                                    f"gpu_pci_slot: {', '.join(unusable)} is not a usable GPU here",
                                    "usable: " + ", ".join(sorted(usable_slots)))
                if self.non_interactive:
                    raise error
                ui.message("GPU", error.line())
                self.settings = self.settings.with_value("gpu_pci_slot", None)
        choices = [(str(r.gpu.address), r.description, True) for r in usable]
        choice = self.obtain(
            "gpu_pci_slot",
            lambda: ui.choose_many("GPU", "GPUs to share with the GOLEM network:", choices),
            'gpu_pci_slot = "auto"', lambda: AUTO)
        chosen = [r for r in usable if choice == AUTO or r.gpu.address in choice]
        devices = {d for r in chosen for d in (r.vfio_devices or r.group_devices)}
        for extra in self.settings.vfio_devices or ():
            if not device_exists(layout.sysfs_root, extra):
                raise ConfigError("vfio_devices", f"vfio_devices: {extra} does not exist here",
                                  "remove it; `lspci -D` lists the devices")
            devices.add(extra)
        gpus = tuple(sorted(r.gpu.address for r in chosen))
        self.step("selected GPU " + ", ".join(f"{r.gpu.address} ({r.description})" for r in chosen))
        self.configured.append("GPU " + ", ".join(f"{r.gpu.address} ({r.description})"
                                                  for r in chosen))
        return gpus, tuple(sorted(devices))

    def configure_provider(self, gpus: tuple[PciAddress, ...]) -> None:
        copies = provider.install_runtimes(self.layout, gpus)
        self.step(f"runtime {provider.RUNTIME_NAME} configured in {copies[0]} for "
                  + ", ".join(map(str, gpus)))
        self.step(f"runtimes offered from {self.layout.user_plugins_dir}: "
                  + ", ".join(c.name for c in copies) + "; supervisor and runtime paths "
                  f"point to {self.layout.yagna_plugins_dir}")
        env = self.settings.env or ()
        if provider.write_env_file(self.layout.provider_env_file, env):
            self.step(f"provider environment written to {self.layout.provider_env_file}")
        settings = provider.ProviderSettings(
            glm_account=self.settings.glm_account or "",
            glm_per_hour=self.settings.glm_per_hour or Decimal(0),
            init_price=self.settings.init_price or Decimal(0),
            node_name=self.settings.glm_node_name,
        )
        provider.setup_provider(settings, self.layout, self.services.runner)
        self.step(f"preset {provider.PRESET_NAME} configured and activated")

    def attach_vfio(self, gpus: tuple[PciAddress, ...],
                    devices: tuple[PciAddress, ...]) -> None:
        layout = self.layout
        survey = survey_gpus(layout.sysfs_root, relax_bridges=self.options.relax_gpu_isolation)
        if any(r.gpu.boot_vga for r in survey.gpus if r.gpu.address in gpus):
            self.show_before_the_screen_goes()
            release_console_framebuffer(layout.sysfs_root, self.services.sysfs_write,
                                        self.services.reporter)
            self.framebuffer_released = True
        bind_to_vfio(layout.sysfs_root, layout.dev_root, devices, self.services.runner,
                     self.services.reporter, self.services.sysfs_write)
        self.configured.append(f"{len(devices)} PCI functions attached to vfio-pci")

    def show_before_the_screen_goes(self) -> None:
        """The boot GPU is the screen: show the final screen (password included) and wait
        for a key or the deadline before it goes dark."""
        screen = self.services.screen
        self.draw_final_screen(self.final_report(
            None, framebuffer_seconds=FRAMEBUFFER_DEADLINE_SECONDS))
        pressed = screen.wait_for_key(FRAMEBUFFER_DEADLINE_SECONDS, lambda: self.step(
            f"the final screen waits up to {FRAMEBUFFER_DEADLINE_SECONDS} s for a key on "
            f"{screen.name} before the boot GPU's framebuffer is released"))
        self.step("a key was pressed" if pressed
                  else "no key pressed before the deadline" if screen.holds
                  else "not at boot: nothing waits")

    def save_configuration(self, after_failure: bool = False) -> None:
        if not self.options.save:
            self.step("--no-save: configuration not saved")
            return
        self.save_attempted = True
        try:
            path = self.store.save(self.settings)
        except OSError as error:
            raise WizardError(f"cannot save {self.store.saved_path}: {error}",
                              f"check that {self.store.saved_path.parent} is writable "
                              "and not full") from None
        where = (f"{path} on {CONF_PARTLABEL} ({self.layout.saved_config} links to it)"
                 if path != self.layout.saved_config
                 else f"{path} (not persistent: no {CONF_PARTLABEL} partition)")
        self.step(f"configuration saved to {where}"
                  + (", keeping what was configured before the failure" if after_failure else ""))
        self.configured.append("configuration saved" + (
            f" on {CONF_PARTLABEL}" if path != self.layout.saved_config
            else " for this session only (no conf partition)"))
        if self.first_boot_read:
            # Only now: had the save failed, the first-boot file would still be there.
            self.store.delete_first_boot()
            self.first_boot_read = False
            self.step("first-boot golemwz.toml deleted: later ones are ignored")

    def keep_configuration_after(self, error: WizardError) -> None:
        """A later step failed (no GPU, a command): keep what is configured so far, so
        the next boot does not ask again. Not for a bad value (the file must be fixed
        first) nor before the terms were accepted."""
        if (isinstance(error, ConfigError) or self.save_attempted
                or (self.settings.accepted_terms is not True and self.spec is None)):
            return
        try:
            self.save_configuration(after_failure=True)
        except WizardError as not_saved:
            self.services.reporter.warn(not_saved.line())  # the first error is the one shown
