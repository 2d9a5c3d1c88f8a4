"""golem-live: build, plan, clean and boot live images."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from apt_repo.cli import repo
from boot_test.qemu import (
    FIRMWARES,
    MEDIA,
    NO_AUTOSTART_ENTRY,
    BootOptions,
    Firmware,
    Media,
    image_path,
    select_menu_entry,
)
from boot_test.qemu import boot as boot_image
from builder.config import (
    IMAGE_PREFIX,
    IMAGE_SUFFIXES,
    load_profile,
    profile_names,
)
from builder.errors import BuildError, raise_interrupt
from builder.mounts import safe_rmtree, sweep
from builder.profile import reference_table
from builder.publish import record_path
from builder.runner import SubprocessRunner
from golem_live.options import (
    DEFAULT_TMP_DIR,
    DEFAULT_WORK_DIR,
    PROJECT_ROOT,
    build_options,
    config_from,
    plan_from,
    run_plan,
)
from golem_live.release import release
from golem_live.reproduce import reproduce
from golem_live.write import write


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Build bootable live images (hybrid ISO and GPT USB image) for GPU compute nodes."""


@main.command()
@build_options
@click.option("--until", default=None, help="Stop after this stage.")
@click.option("--force", multiple=True, help="Rebuild this stage (and what follows) anyway.")
def build(until: str | None, force: tuple[str, ...], **kwargs: Any) -> None:
    """Run the stages that are not cached and publish the images into WORK_DIR."""
    config = config_from(kwargs)
    run_plan(plan_from(kwargs, config, until, force))


@main.command()
@build_options
@click.option("--until", default=None, help="Plan only up to this stage.")
@click.option("--force", multiple=True, help="Plan as if this stage were forced.")
def plan(until: str | None, force: tuple[str, ...], **kwargs: Any) -> None:
    """Show every stage in order with its cache key, and what changed for a miss."""
    config = config_from(kwargs)
    for step in plan_from(kwargs, config, until, force).steps:
        status = "will run" if step.will_run else "cached"
        click.echo(f"{step.stage.name:<12} {step.key[:16]}  {status}")
        if step.will_run:
            for change in step.changes or ("forced",):
                click.echo(f"{'':<12}   - {change}")


@main.command()
@click.option("--tmp-dir", type=click.Path(path_type=Path), default=DEFAULT_TMP_DIR,
              show_default=True)
@click.option("--work-dir", type=click.Path(path_type=Path), default=DEFAULT_WORK_DIR,
              show_default=True)
@click.option("--sweep", "sweep_only", is_flag=True,
              help="Only unmount and detach what a killed build left behind.")
def clean(tmp_dir: Path, work_dir: Path, sweep_only: bool) -> None:
    """Remove the stage cache and images (always unmounting leftovers first)."""
    runner = SubprocessRunner(tmp_dir / "logs" / "clean.log") if tmp_dir.exists() else \
        SubprocessRunner(Path("/dev/null"))
    for line in sweep([tmp_dir, work_dir], runner):
        click.echo(line)
    if sweep_only:
        click.echo("nothing left mounted or attached under TMP_DIR and WORK_DIR")
        return
    for path in (tmp_dir, work_dir / ".cache"):
        if path.exists():
            safe_rmtree(path)
            click.echo(f"removed {path}")
    if work_dir.exists():
        for image in [image for suffix in IMAGE_SUFFIXES.values()
                      for image in work_dir.glob(f"{IMAGE_PREFIX}-*.{suffix}")]:
            image.unlink()
            record_path(image).unlink(missing_ok=True)
            click.echo(f"removed {image}")


@main.command()
@click.option("--media", type=click.Choice(MEDIA), default="usb", show_default=True)
@click.option("--firmware", type=click.Choice(FIRMWARES), default="uefi", show_default=True)
@click.option("--timeout", type=float, default=None,
              help="Seconds before giving up (default: 600 with --expect, else none).")
@click.option("--expect", default=None, help="Exit 0 when this text appears on the console.")
@click.option("--kvm", is_flag=True, help="Use KVM instead of software emulation.")
@click.option("--secure-boot", is_flag=True, help="UEFI with Secure Boot enforced.")
@click.option("--no-autostart", is_flag=True, help="Boot the NO AUTOSTART menu entry.")
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Image to boot (default: the built one in WORK_DIR).")
@click.option("--version", "image_version", default="dev", show_default=True)
@click.option("--work-dir", type=click.Path(path_type=Path), default=DEFAULT_WORK_DIR,
              show_default=True)
def boot(media: Media, firmware: Firmware, timeout: float | None, expect: str | None,
         kvm: bool, secure_boot: bool, no_autostart: bool, image: Path | None,
         image_version: str, work_dir: Path) -> None:
    """Boot the built image in QEMU with the serial console captured to a log."""
    image = image or image_path(work_dir, image_version, media)
    if not image.is_file():
        raise BuildError(f"no image at {image}", "build it first: make image")
    watched = expect is not None or no_autostart or not sys.stdin.isatty()
    options = BootOptions(
        image=image, media=media, firmware=firmware, kvm=kvm, secure_boot=secure_boot,
        timeout=timeout if timeout is not None else (600.0 if expect else None),
        expect=expect, interactive=not watched,
        actions=(select_menu_entry(NO_AUTOSTART_ENTRY),) if no_autostart else ())
    click.echo(f"booting {image.name} ({media}, {firmware}); console log: "
               f"{options.console_log()}", err=True)
    result = boot_image(options, echo=None if options.interactive else _echo_console)
    click.echo(f"{result.reason} after {result.seconds:.0f}s", err=True)
    if result.returncode != 0:
        raise click.exceptions.Exit(result.returncode)


def _echo_console(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@main.command("profiles")
@click.option("--reference", is_flag=True,
              help="Print every profile key with its type, default and meaning (markdown).")
def list_profiles(reference: bool) -> None:
    """List the profiles, one line each."""
    if reference:
        click.echo(reference_table(), nl=False)
        return
    names = profile_names(PROJECT_ROOT)
    width = max((len(n) for n in names), default=0)
    for name in names:
        click.echo(f"{name:<{width}}  {load_profile(PROJECT_ROOT, name).description}")


main.add_command(repo)
main.add_command(write)
main.add_command(release)
main.add_command(reproduce)


def run() -> int:
    """Entry point: one line for a user error, cleanup on Ctrl-C and SIGTERM."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        main.main(standalone_mode=False)
    except BuildError as err:
        click.echo(f"error: {err.line()}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted; nothing was left mounted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted; nothing was left mounted and no partial cache entry kept",
                   err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(run())
