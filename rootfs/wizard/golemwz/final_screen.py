"""The wizard's last screen, and the notes it leaves for the tty1 login.

The last screen is what a person finds at the machine, maybe hours after an
unattended boot: whether it worked, the password generated at this boot (shown
nowhere else), where to reach the node, its name, what was configured and, on
failure, the error with its fix. It has to fit a VGA text screen (80x25).

After the key press the screen is cleared (the password must not stay behind
the login) and tty1 gets a login: the message of the day then repeats a
failure (/run/motd.d, read by pam_motd) and the login prompt the node's
summary (/etc/issue.d, read by agetty). Neither ever holds the password.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from golemwz.errors import WizardError
from golemwz.layout import GOLEM_USER

LOG_NAME = "~golem/golemwz.log"
MAX_ADDRESSES = 3  # the screen is small; `ip address` shows the rest
MAX_CONFIGURED = 7


@dataclass(frozen=True)
class FinalReport:
    error: WizardError | None
    password: str | None  # generated at this boot; None when restored or kept
    password_note: str  # how the password came to be, when it is not shown
    node_name: str | None
    hostname: str
    addresses: Sequence[str]
    configured: Sequence[str]
    golem: bool  # the GOLEM provider packages are installed
    holds: bool  # the screen waits for a key (at boot)
    framebuffer_seconds: int | None = None  # the boot GPU is about to be handed over
    profile: str | None = None  # a non-GOLEM profile's name (profile_spec), for the title

    @property
    def failed(self) -> bool:
        return self.error is not None


def title(report: FinalReport) -> str:
    name = f"{report.profile} wizard" if report.profile else "GOLEM provider wizard"
    return f"{name}: " + ("FAILED" if report.failed else "done")


def body(report: FinalReport) -> str:
    lines: list[str] = []
    if report.error is not None:
        lines += [f"Error: {report.error.problem}"]
        if report.error.fix:
            lines += [f"Fix:   {report.error.fix}"]
    elif report.golem:
        lines += ["The GOLEM provider is configured" + (
            "." if report.framebuffer_seconds else " and started.")]
    else:
        lines += ["This node is configured (no GOLEM provider packages on this image)."]
    lines += [""]
    if report.password:
        lines += [f"Password of user '{GOLEM_USER}', generated at this boot (write it down, "
                  "it is not shown again):", f"    {report.password}", ""]
    else:
        lines += [f"Password of user '{GOLEM_USER}': {report.password_note}."]
    lines += [f"Node name: {report.node_name or report.hostname}"
              + ("" if report.node_name else " (the host name; glm_node_name is not set)")]
    if report.addresses:
        shown = list(report.addresses)[:MAX_ADDRESSES]
        lines += ["Reach it:  " + "   ".join(f"ssh {GOLEM_USER}@{a}" for a in shown)]
    else:
        lines += ["Reach it:  no IP address yet (is a network cable plugged in?)"]
    if report.configured:
        lines += ["", "Configured before the error:" if report.failed else "Configured:"]
        items = list(report.configured)
        lines += [f"  - {item}" for item in items[-MAX_CONFIGURED:]]
    lines += ["", f"The wizard's log: {LOG_NAME}"]
    if report.framebuffer_seconds:
        lines += [f"This screen goes dark when a key is pressed or in {report.framebuffer_seconds}"
                  " s:", "the boot GPU is then handed over to the VMs. Use SSH from then on."]
    elif report.holds:
        then = ("golem is logged in on tty1 to fix it" if report.failed
                else "the login prompt replaces this screen")
        lines += [f"Press any key when you have read this: {then}."]
    return "\n".join(lines)


def motd_text(error: WizardError) -> str:
    """The tty1 fallback's message of the day after a failure: the last error line."""
    return (f"\nThe GOLEM provider wizard failed at this boot:\n  {error.line()}\n"
            f"The whole log: {LOG_NAME}. After fixing it: sudo golemwz\n\n")


def issue_text(report: FinalReport) -> str:
    """Lines above the login prompt after a successful run (agetty's \\4 is its IPv4)."""
    what = "GOLEM provider configured and started" if report.golem else "node configured"
    name = report.node_name or report.hostname
    status = ("  Provider status: systemctl status golem-provider\n" if report.golem else "")
    return (f"{what} by golemwz at this boot; node {name}.\n"
            f"  Connect: ssh {GOLEM_USER}@\\4\n{status}"
            f"  Wizard log: {LOG_NAME}\n\n")


def write_notice(path: Path, text: str | None) -> None:
    """Write (or with None remove) a note; OSError if that fails."""
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
