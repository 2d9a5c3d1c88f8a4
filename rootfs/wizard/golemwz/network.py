"""Wait for NetworkManager and tell the user where to SSH to."""

from __future__ import annotations

from collections.abc import Callable

from golemwz.runner import Runner

NM_ONLINE_ATTEMPTS = 12
NM_ONLINE_STEP_SECONDS = 5


def wait_for_network(runner: Runner, show_progress: Callable[[int, str], None]) -> bool:
    """nm-online in short steps, so a gauge can move while NetworkManager connects."""
    for attempt in range(NM_ONLINE_ATTEMPTS):
        waited = attempt * NM_ONLINE_STEP_SECONDS
        show_progress(100 * attempt // NM_ONLINE_ATTEMPTS,
                      f"Waiting for the network ({waited} s)...")
        result = runner.run(["nm-online", "--quiet", "--timeout", str(NM_ONLINE_STEP_SECONDS)],
                            check=False)
        if result.returncode == 0:
            show_progress(100, "The network is up.")
            return True
    return False


def parse_nmcli_addresses(output: str) -> list[str]:
    """Addresses from `nmcli --terse --fields IP4.ADDRESS,IP6.ADDRESS device show`.

    Terse mode escapes the colons of IPv6 values as `\\:`; loopback and
    link-local addresses are useless for SSH from another machine.
    """
    addresses = []
    for line in output.splitlines():
        _field, _, value = line.partition(":")
        address = value.replace("\\:", ":").split("/")[0].strip()
        if address and not address.startswith(("127.", "::1", "fe80:")):
            addresses.append(address)
    return list(dict.fromkeys(addresses))


def ip_addresses(runner: Runner) -> list[str]:
    result = runner.run(["nmcli", "--terse", "--fields", "IP4.ADDRESS,IP6.ADDRESS",
                         "device", "show"], check=False)
    return parse_nmcli_addresses(result.stdout)
