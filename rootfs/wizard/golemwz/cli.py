"""golemwz command line: the wizard itself, and `golemwz gpus` for support.

Exit status: 0 done; 1 a step failed (the boot unit then logs `golem` in on
tty1); 2 a bad flag or configuration value (bad input never shows a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from golemwz.boot_console import BootScreen, console_is_a_vt
from golemwz.check import run_check
from golemwz.config import Settings, parse_layer
from golemwz.errors import WizardError
from golemwz.layout import SystemLayout
from golemwz.pci import GpuSurvey, PciAddress, survey_gpus
from golemwz.profile_spec import load_spec
from golemwz.report import SYSTEM_CONSOLE, Reporter
from golemwz.runner import SubprocessRunner
from golemwz.termination import GUARD, Terminated
from golemwz.ui import UI, PlainUI
from golemwz.vfio import bind_to_vfio
from golemwz.wizard import Options, Services, Wizard

# (flag, configuration key, help): flags share the TOML keys' validation.
VALUE_FLAGS = (
    ("--glm-node-name", "glm_node_name", "Name of this node in the GOLEM network."),
    ("--glm-account", "glm_account", "Account for payments."),
    ("--glm-per-hour", "glm_per_hour", "Recommended default value is 0.25."),
    ("--init-price", "init_price", "For testing set it to 0."),
    ("--gpu-pci-slot", "gpu_pci_slot",
     "GPU(s) to share, comma-separated PCI addresses (see `golemwz gpus`), or 'auto'."),
    ("--vfio-devices", "vfio_devices",
     "Extra PCI devices (comma-separated) to attach to VFIO with the GPUs' IOMMU groups."),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="golemwz", description="GOLEM GPU provider wizard.")
    parser.add_argument("--debug", action="store_true",
                        help="Show commands and their output; tracebacks on internal errors.")
    parser.add_argument("--no-relax-gpu-isolation", action="store_true",
                        help="Don't allow PCI bridge on which the GPU is connected in the same "
                             "IOMMU group.")
    parser.add_argument("--insecure", action="store_true",
                        help="Ignore non-isolated IOMMU groups.")
    parser.add_argument("--storage-only", action="store_true",
                        help="Configure only persistent storage.")
    for flag, key, help_text in VALUE_FLAGS:
        parser.add_argument(flag, dest=key, metavar=key.upper(), help=help_text)
    parser.add_argument("--no-passthrough", action="store_true",
                        help="Don't attach devices to VFIO.")
    parser.add_argument("--no-save", action="store_true",
                        help="Don't save running configuration.")
    parser.add_argument("--at-boot", action="store_true",
                        help="As golemwz.service runs it on tty1: kernel messages moved to "
                             "tty12, systemd notified when done, the last screen kept until "
                             "a key is pressed.")
    parser.add_argument("--log-to-console", action="store_true",
                        help=f"Also write progress lines to {SYSTEM_CONSOLE} (the boot unit "
                             "passes it, so they reach the serial console).")
    commands = parser.add_subparsers(dest="command", metavar="{gpus,check,vfio-bind}")
    gpus = commands.add_parser("gpus", help="Show the NVIDIA GPUs and their IOMMU isolation.")
    gpus.add_argument("--sysfs-root", type=Path, default=Path("/sys"))
    gpus.add_argument("--no-relax-gpu-isolation", action="store_true",
                      help="Count PCI bridges in the GPU's IOMMU group as not isolated.")
    gpus.add_argument("--json", action="store_true", help="Machine-readable output.")
    check = commands.add_parser(
        "check", help="Validate a golemwz.toml (and the golem.env beside it), a "
                      "golemwz-saved.toml or a golem.env without touching the system: every "
                      "error with its key and fix (exit 2), or 'valid'.")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--profile", type=Path, metavar="SPEC", default=None,
                       help="The profile spec whose [profile] keys FILE may set (default: "
                            "this image's /usr/share/golemwz/profile.toml, if any); from the "
                            "project: rootfs/overlay/PROFILE/usr/share/golemwz/profile.toml.")
    bind = commands.add_parser(
        "vfio-bind", help="Bind the PCI functions listed in FILE (one a line) to vfio-pci, "
                          "unbinding their drivers (golemwz-vfio.service runs it).")
    bind.add_argument("file", type=Path, metavar="FILE")
    return parser


def format_survey(survey: GpuSurvey) -> str:
    lines = [f"IOMMU: {'on' if survey.iommu else 'off'}"]
    if not survey.gpus:
        lines.append("no NVIDIA GPU found")
    for report in survey.gpus:
        state = "isolated" if report.isolated else "NOT isolated"
        lines.append(f"{report.gpu.address}  {report.description}  group "
                     f"{report.gpu.iommu_group}  {state}: {report.reason}")
        if report.vfio_devices:
            lines.append("    vfio devices: " + " ".join(map(str, report.vfio_devices)))
    return "\n".join(lines)


def show_gpus(args: argparse.Namespace) -> int:
    survey = survey_gpus(args.sysfs_root, relax_bridges=not args.no_relax_gpu_isolation,
                         pci_ids_file=SystemLayout().pci_ids_file)
    print(json.dumps(survey.to_json(), indent=2) if args.json else format_survey(survey))
    return 0


def vfio_bind(path: Path, layout: SystemLayout | None = None,
              runner: SubprocessRunner | None = None) -> int:
    """The devices golemwz wrote (profile_steps.VFIO_DEVICES_FILE) to vfio-pci."""
    layout = layout or SystemLayout()
    reporter = Reporter(None, debug=False)
    try:
        addresses = [PciAddress.parse(line.strip()) for line in
                     path.read_text(encoding="ascii").splitlines() if line.strip()]
        bind_to_vfio(layout.sysfs_root, layout.dev_root, addresses,
                     runner or SubprocessRunner(reporter), reporter)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"golemwz: error: {path}: {error}", file=sys.stderr)
        return 2
    except WizardError as error:
        print(f"golemwz: error: {error.line()}", file=sys.stderr)
        return error.exit_status
    return 0


def flag_settings(args: argparse.Namespace) -> Settings:
    given = {key: getattr(args, key) for _flag, key, _help in VALUE_FLAGS
             if getattr(args, key) is not None}
    settings, errors = parse_layer(given, "command line")
    if errors:
        raise errors[0]
    return settings


def real_services(args: argparse.Namespace) -> Services:
    layout = SystemLayout()
    if os.geteuid() != 0:
        raise WizardError("golemwz mounts, binds devices and sets passwords: it needs root",
                          "run: sudo golemwz " + " ".join(sys.argv[1:]))
    # Never onto the screen the dialogs are on (a machine without a serial port).
    to_console = args.log_to_console and not console_is_a_vt(layout.sysfs_root)
    reporter = Reporter(layout.log_file if layout.golem_home.is_dir() else None,
                        console_path=SYSTEM_CONSOLE if to_console else None,
                        debug=args.debug)
    ui: UI
    if sys.stdin.isatty() and shutil.which("dialog"):
        from golemwz.dialog_ui import DialogUI  # python3-dialog is needed only here
        ui = DialogUI()
    else:
        ui = PlainUI(input, sys.stdout)
    runner = SubprocessRunner(reporter)
    if not args.at_boot:
        return Services(layout=layout, runner=runner, ui=ui, reporter=reporter)
    screen = BootScreen(reporter, runner)
    screen.move_kernel_messages()
    return Services(layout=layout, runner=runner, ui=ui, reporter=reporter, screen=screen)


def report_failure(wizard: Wizard, error: WizardError) -> None:
    services = wizard.services
    # The final screen, unless the wizard showed it already (errors within its run);
    # then the error, last, as on every failed run.
    wizard.finish(error)
    services.reporter.step(f"error: {error.line()}")


def main(argv: Sequence[str] | None = None, services: Services | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "gpus":
        return show_gpus(args)
    if args.command == "check":
        try:
            spec = load_spec(args.profile or SystemLayout().profile_spec_file)
        except WizardError as error:
            print(f"golemwz: error: {error.line()}", file=sys.stderr)
            return 2
        return run_check(args.file, sys.stdout, spec)
    if args.command == "vfio-bind":
        return vfio_bind(args.file)
    try:
        flags = flag_settings(args)
        services = services or real_services(args)
    except WizardError as error:
        print(f"golemwz: error: {error.line()}", file=sys.stderr)
        return error.exit_status
    options = Options(
        debug=args.debug,
        relax_gpu_isolation=not args.no_relax_gpu_isolation,
        insecure=args.insecure,
        storage_only=args.storage_only,
        passthrough=not args.no_passthrough,
        save=not args.no_save,
    )
    wizard = Wizard(options=options, flags=flags, services=services)
    status = 0
    # SIGTERM (unit stop, shutdown): a grow step finishes first, then Terminated
    # unwinds through Wizard.run's `finally`, which closes the conf partition.
    restore_sigterm = GUARD.install()
    try:
        wizard.run()
    except Terminated as stopped:
        services.reporter.step(stopped.line())
        return stopped.exit_status
    except WizardError as error:
        report_failure(wizard, error)
        status = error.exit_status
    except KeyboardInterrupt:
        services.reporter.step("interrupted")
        return 130
    except Exception as bug:
        services.reporter.detail(traceback.format_exc())
        report_failure(wizard, WizardError(f"internal error: {type(bug).__name__}: {bug}",
                                           "please report it with ~golem/golemwz.log"))
        if args.debug:
            traceback.print_exc()
        status = 1
    finally:
        restore_sigterm()
    # At boot: the final screen until a key, then the tty1 login (see golemwz.service).
    wizard.hold_final_screen(failed=status != 0)
    return status

