"""boot_test.qemu without QEMU: the command line, the console watcher against a
scripted console and a fake clock, and boot() against a stand-in qemu script."""

from __future__ import annotations

import io
import os
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

from boot_test.qemu import (
    NO_AUTOSTART_ENTRY,
    OVMF_CODE,
    OVMF_MS_VARS,
    OVMF_SECBOOT_CODE,
    BootOptions,
    ConsoleAction,
    ConsoleWatcher,
    boot,
    check_host,
    image_path,
    qemu_argv,
    select_menu_entry,
    strip_ansi,
    watch_console,
)
from builder.errors import BuildError

IMAGE = Path("/images/golem-gpu-live-1.0.img")


def options(**kw: object) -> BootOptions:
    return BootOptions(IMAGE, **kw)  # type: ignore[arg-type]


def value_after(argv: list[str], flag: str, containing: str) -> str:
    """The value of the `flag` option whose value contains `containing`."""
    for i, arg in enumerate(argv[:-1]):
        if arg == flag and containing in argv[i + 1]:
            return argv[i + 1]
    raise AssertionError(f"no {flag} with {containing!r} in {argv}")


# --- argv ----------------------------------------------------------------------------


def test_usb_under_bios_is_a_usb_stick_with_tcg_and_2g() -> None:
    argv = qemu_argv(options(media="usb", firmware="bios"))
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-m") + 1] == "2048"
    assert "-device" in argv and "qemu-xhci,id=xhci" in argv
    drive = value_after(argv, "-drive", "id=stick")
    assert f"file={IMAGE}" in drive and "snapshot=on" in drive and "format=raw" in drive
    assert "usb-storage,bus=xhci.0,drive=stick,bootindex=0" in argv
    assert not any("pflash" in arg for arg in argv)  # SeaBIOS is QEMU's default
    assert argv[argv.index("-serial") + 1] == "stdio"


def test_iso_is_a_cdrom() -> None:
    argv = qemu_argv(options(media="iso", firmware="bios"))
    drive = value_after(argv, "-drive", "id=cdrom")
    assert "media=cdrom" in drive and "readonly=on" in drive
    assert "ide-cd,drive=cdrom,bootindex=0" in argv
    assert not any("usb-storage" in arg for arg in argv)


def test_uefi_uses_ovmf_code_read_only_and_the_vars_copy(tmp_path: Path) -> None:
    copy = tmp_path / "vars.fd"
    argv = qemu_argv(options(firmware="uefi"), copy)
    code = value_after(argv, "-drive", "unit=0")
    assert "if=pflash" in code and "readonly=on" in code and f"file={OVMF_CODE}" in code
    assert f"file={copy}" in value_after(argv, "-drive", "unit=1")
    assert "-global" not in argv


def test_uefi_without_a_vars_copy_is_refused() -> None:
    with pytest.raises(ValueError):
        qemu_argv(options(firmware="uefi"))


def test_secure_boot_uses_enforcing_firmware_with_smm(tmp_path: Path) -> None:
    opts = options(firmware="uefi", secure_boot=True)
    assert opts.firmware_files() == (OVMF_SECBOOT_CODE, OVMF_MS_VARS)
    argv = qemu_argv(opts, tmp_path / "vars.fd")
    assert argv[argv.index("-machine") + 1] == "q35,smm=on"
    assert f"file={OVMF_SECBOOT_CODE}" in value_after(argv, "-drive", "unit=0")
    assert "driver=cfi.pflash01,property=secure,value=on" in argv


def test_writable_stick_and_extra_arguments() -> None:
    argv = qemu_argv(options(firmware="bios", snapshot=False, extra_args=("-nic", "user")))
    assert "snapshot=off" in value_after(argv, "-drive", "id=stick")
    assert argv[-2:] == ["-nic", "user"]


def test_kvm_only_when_asked() -> None:
    assert "kvm" not in qemu_argv(options(firmware="bios"))
    argv = qemu_argv(options(firmware="bios", kvm=True))
    assert argv[argv.index("-accel") + 1] == "kvm"


def test_commas_in_paths_are_escaped() -> None:
    argv = qemu_argv(BootOptions(Path("/a,b/x.img"), firmware="bios"))
    assert "file=/a,,b/x.img" in value_after(argv, "-drive", "id=stick")


def test_interactive_puts_the_console_on_the_terminal_and_logs_it() -> None:
    argv = qemu_argv(options(firmware="bios", interactive=True, log_path=Path("/l/c.log")))
    assert value_after(argv, "-chardev", "stdio") == "stdio,id=console,mux=on,logfile=/l/c.log"
    assert argv[argv.index("-serial") + 1] == "chardev:console"


def test_default_log_sits_next_to_the_image() -> None:
    assert options(media="iso", firmware="uefi").console_log() == Path(
        "/images/golem-gpu-live-1.0.boot-iso-uefi.log")


def test_image_path_names_the_published_files() -> None:
    assert image_path(Path("/w"), "1.0", "iso") == Path("/w/golem-gpu-live-1.0.iso")
    assert image_path(Path("/w"), "1.0", "usb") == Path("/w/golem-gpu-live-1.0.img")


# --- console watching ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedConsole:
    """Yields the scripted chunks one read at a time; an empty read costs its timeout."""

    def __init__(self, chunks: Iterable[bytes], clock: FakeClock, exits: bool = False) -> None:
        self.chunks = list(chunks)
        self.clock = clock
        self.exits = exits
        self.written: list[bytes] = []

    def read(self, timeout: float) -> bytes | None:
        if self.chunks:
            return self.chunks.pop(0)
        if self.exits:
            return None
        self.clock.now += timeout
        return b""

    def write(self, data: bytes) -> None:
        self.written.append(data)


def watch(chunks: Iterable[bytes], expect: str | None, actions: tuple[ConsoleAction, ...] = (),
          timeout: float = 60, exits: bool = False) -> tuple[str, ScriptedConsole, bytes]:
    clock = FakeClock()
    console = ScriptedConsole(chunks, clock, exits)
    log = io.BytesIO()
    outcome = watch_console(console, ConsoleWatcher(expect, list(actions)), timeout, log, clock)
    return outcome, console, log.getvalue()


def test_expected_text_matches_even_when_split_across_reads() -> None:
    outcome, _, log = watch([b"Debian ttyS0\r\n\r\nhost lo", b"gin: "], "login:")
    assert outcome == "matched"
    assert log == b"Debian ttyS0\r\n\r\nhost login: "


def test_missing_text_times_out() -> None:
    outcome, _, _ = watch([b"Kernel panic - not syncing"], "login:", timeout=30)
    assert outcome == "timeout"


def test_qemu_exit_ends_the_watch() -> None:
    outcome, _, _ = watch([b"reboot: Power down\r\n"], "login:", exits=True)
    assert outcome == "exited"


def test_escape_sequences_do_not_hide_text() -> None:
    outcome, _, _ = watch([b"\x1b[0;32m  OK  \x1b[0m] x\r\nlo\x1b[1mgin:"], "login:")
    assert outcome == "matched"
    assert strip_ansi("\x1b[02;34HGNU GRUB\x1b(B\x1b[?25l") == "GNU GRUB"


def test_menu_selection_types_keys_once_after_the_menu_appears() -> None:
    chunks = [b"Welcome to GRUB!\r\n", b"\x1b[2J\x1b[02;34HGNU GR", b"UB  version 2.06",
              b"GNU GRUB  version 2.06 (redrawn)", b"Command line: ... skip_autostart\r\n",
              b"login: "]
    outcome, console, _ = watch(chunks, "login:", (select_menu_entry(NO_AUTOSTART_ENTRY),))
    assert outcome == "matched"
    assert console.written == [b"v\r"]


def test_expect_only_counts_after_the_actions() -> None:
    # A login prompt from before the menu choice must not count.
    chunks = [b"login: ", b"GNU GRUB"]
    outcome, console, _ = watch(chunks, "login:", (select_menu_entry(1),))
    assert outcome == "timeout"
    assert console.written == [b"v\r"]


def test_select_menu_entry_keys() -> None:
    assert select_menu_entry(0).keys == b"\r"
    assert select_menu_entry(2).keys == b"vv\r"
    assert select_menu_entry(1).trigger == "GNU GRUB"


def test_watcher_keeps_bounded_memory() -> None:
    watcher = ConsoleWatcher("never")
    for _ in range(100):
        watcher.feed(b"x" * 4096)
    assert len(watcher._raw) <= 2 * 16 * 1024


# --- boot() with a stand-in for qemu -------------------------------------------------

FAKE_QEMU = textwrap.dedent("""\
    #!{python}
    import os, sys, time
    open(os.environ["FAKE_QEMU_PIDFILE"], "w").write(str(os.getpid()))
    open(os.environ["FAKE_QEMU_ARGV"], "w").write("\\n".join(sys.argv))
    out = sys.stdout.buffer
    out.write(b"GNU GRUB  version 2.06\\r\\n"); out.flush()
    key = sys.stdin.buffer.read(2)
    out.write(b"Command line: boot=live" + (b" skip_autostart" if key == b"v\\r" else b"")
              + b"\\r\\n")
    out.write(os.environ.get("FAKE_QEMU_SAYS", "").encode()); out.flush()
    time.sleep(600)
""")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake-qemu"
    script.write_text(FAKE_QEMU.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(tmp_path / "qemu.pid"))
    monkeypatch.setenv("FAKE_QEMU_ARGV", str(tmp_path / "qemu.argv"))
    return script


def boot_options(fake_qemu: Path, tmp_path: Path, **kw: object) -> BootOptions:
    image = tmp_path / "golem.img"
    image.write_bytes(b"\0" * 512)
    vars_template = tmp_path / "OVMF_VARS.fd"
    vars_template.write_bytes(b"vars")
    return BootOptions(image, qemu=str(fake_qemu), ovmf_code=vars_template,
                       ovmf_vars=vars_template, ovmf_secboot_code=vars_template,
                       ovmf_secboot_vars=vars_template, log_path=tmp_path / "console.log",
                       **kw)  # type: ignore[arg-type]


def process_gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reaped by boot(); a zombie would still be signalable, so check its state.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] == "Z"


def vars_copy_dir(argv_file: Path) -> Path:
    drive = next(a for a in argv_file.read_text().splitlines() if "unit=1" in a)
    return Path(drive.split("file=", 1)[1]).parent


def test_boot_selects_no_autostart_and_stops_qemu(fake_qemu: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QEMU_SAYS", "golem login: ")
    result = boot(boot_options(fake_qemu, tmp_path, expect="login:",
                               actions=(select_menu_entry(NO_AUTOSTART_ENTRY),)))
    assert result.returncode == 0
    assert b"Command line: boot=live skip_autostart" in result.log_path.read_bytes()
    assert process_gone(tmp_path / "qemu.pid")
    assert not vars_copy_dir(tmp_path / "qemu.argv").exists()


def test_boot_times_out_with_1_and_stops_qemu(fake_qemu: Path, tmp_path: Path) -> None:
    result = boot(boot_options(fake_qemu, tmp_path, expect="login:", timeout=0.5))
    assert result.returncode == 1
    assert "timeout" in result.reason
    assert process_gone(tmp_path / "qemu.pid")
    assert not vars_copy_dir(tmp_path / "qemu.argv").exists()


def test_interrupt_stops_qemu_and_removes_temp_files(fake_qemu: Path, tmp_path: Path) -> None:
    def interrupt(_: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        boot(boot_options(fake_qemu, tmp_path, expect="login:"), echo=interrupt)
    assert process_gone(tmp_path / "qemu.pid")
    assert not vars_copy_dir(tmp_path / "qemu.argv").exists()


def test_boot_refuses_a_missing_image(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        boot(BootOptions(tmp_path / "none.img", firmware="bios", qemu=sys.executable))
    with pytest.raises(BuildError, match="does not exist"):  # a directory is no image
        check_host(BootOptions(tmp_path, firmware="bios", qemu=sys.executable))


def test_a_block_device_is_an_image_to_boot() -> None:
    # a written stick or a loop device: QEMU reads it as a raw drive
    block = next((d for d in (Path("/dev/loop0"), Path("/dev/vda"), Path("/dev/sda"))
                  if d.is_block_device()), None)
    if block is None:
        pytest.skip("no block device node on this machine")
    check_host(BootOptions(block, firmware="bios", qemu=sys.executable))


def test_secure_boot_needs_uefi(fake_qemu: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="Secure Boot needs UEFI"):
        boot(boot_options(fake_qemu, tmp_path, firmware="bios", secure_boot=True))


# --- QMP: keys, screendump, power button (boot_test.qmp) against a fake QEMU --------


class FakeQmpServer:
    """Greets, answers each command (an event first, to be skipped), records requests."""

    def __init__(self, path: Path, errors: dict[str, str] | None = None) -> None:
        import socket
        import threading

        self.path = path
        self.errors = errors or {}
        self.requests: list[dict[str, object]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import json

        connection, _ = self.server.accept()
        with connection, connection.makefile("rb") as reader:
            connection.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            for line in reader:
                request = json.loads(line)
                self.requests.append(request)
                connection.sendall(b'{"event": "RTC_CHANGE", "data": {}}\n')
                command = request["execute"]
                if command in self.errors:
                    reply = {"error": {"class": "GenericError", "desc": self.errors[command]}}
                else:
                    reply = {"return": {}}
                connection.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


def test_qmp_negotiates_then_sends_key_chords_and_skips_events(tmp_path: Path) -> None:
    from boot_test.qmp import Qmp

    server = FakeQmpServer(tmp_path / "qmp.sock")
    with Qmp(tmp_path / "qmp.sock", timeout=5) as qmp:
        qmp.send_key("ctrl", "alt", "f2")
        qmp.screendump(tmp_path / "screen.ppm")
        qmp.powerdown()
        assert [e["event"] for e in qmp.events] == ["RTC_CHANGE"] * 4
    server.close()
    assert [r["execute"] for r in server.requests] == [
        "qmp_capabilities", "send-key", "screendump", "system_powerdown"]
    assert server.requests[1]["arguments"] == {
        "keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"},
                 {"type": "qcode", "data": "f2"}], "hold-time": 100}
    assert server.requests[2]["arguments"] == {"filename": str(tmp_path / "screen.ppm")}


def test_qmp_errors_name_the_command(tmp_path: Path) -> None:
    from boot_test.qmp import Qmp, QmpError

    server = FakeQmpServer(tmp_path / "qmp.sock", errors={"send-key": "Invalid key 'nope'"})
    with Qmp(tmp_path / "qmp.sock", timeout=5) as qmp, \
            pytest.raises(QmpError, match="send-key: Invalid key 'nope'"):
        qmp.send_key("nope")
    server.close()


def test_qmp_waits_for_the_socket_qemu_has_not_made_yet(tmp_path: Path) -> None:
    import threading

    from boot_test.qmp import Qmp

    servers: list[FakeQmpServer] = []
    later = threading.Timer(0.5, lambda: servers.append(FakeQmpServer(tmp_path / "qmp.sock")))
    later.start()
    with Qmp(tmp_path / "qmp.sock", timeout=5):
        pass
    later.join()
    servers[0].close()


def test_text_becomes_key_chords_with_shift_for_capitals_and_symbols() -> None:
    from boot_test.qmp import keys_for_text

    assert keys_for_text("0xAb-1\n") == [["0"], ["x"], ["shift", "a"], ["b"], ["minus"], ["1"],
                                         ["ret"]]
    assert keys_for_text('"_:') == [["shift", "apostrophe"], ["shift", "minus"],
                                    ["shift", "semicolon"]]
    with pytest.raises(ValueError, match="no key types 'é'"):
        keys_for_text("é")


# --- reading the screen (boot_test.screen) -------------------------------------------


BLUE, GREY, WHITE, BLACK = b"\x00\x00\xaa", b"\xaa\xaa\xaa", b"\xff\xff\xff", b"\x00\x00\x00"


def two_cell_screen(tmp_path: Path) -> Path:
    """16x16 pixels, two 8x16 cells: white ink on blue, then black ink on grey."""
    rows = []
    for y in range(16):
        left = [WHITE if x == 3 and y > 4 else BLUE for x in range(8)]
        right = [BLACK if x == 5 and y < 10 else GREY for x in range(8)]
        rows.append(b"".join(left + right))
    path = tmp_path / "screen.ppm"
    path.write_bytes(b"P6\n# written by QEMU\n16 16\n255\n" + b"".join(rows))
    return path


def test_screendump_cells_become_black_ink_on_white_whatever_their_colours(
        tmp_path: Path) -> None:
    from boot_test.screen import binarize, read_ppm

    image = read_ppm(two_cell_screen(tmp_path))
    assert (image.width, image.height, len(image.pixels)) == (16, 16, 16 * 16 * 3)
    grey = binarize(image)
    ink = {(i % 16, i // 16) for i, value in enumerate(grey.pixels) if value == 0}
    assert ink == {(3, y) for y in range(5, 16)} | {(13, y) for y in range(10)}
    assert set(grey.pixels) == {0, 255}


def test_enlarged_pages_keep_square_pixels(tmp_path: Path) -> None:
    from boot_test.screen import Image, enlarge, write_pgm

    big = enlarge(Image(2, 1, bytes([0, 255])), factor=3)
    assert (big.width, big.height) == (6, 3)
    assert big.pixels == bytes([0, 0, 0, 255, 255, 255]) * 3
    assert write_pgm(big, tmp_path / "p.pgm").read_bytes().startswith(b"P5\n6 3\n255\n")


def test_only_binary_8_bit_ppm_is_read(tmp_path: Path) -> None:
    from boot_test.screen import read_ppm

    (tmp_path / "a.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    with pytest.raises(ValueError, match="not a binary PPM"):
        read_ppm(tmp_path / "a.ppm")
    (tmp_path / "b.ppm").write_bytes(b"P6\n2 2\n255\n\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        read_ppm(tmp_path / "b.ppm")


@pytest.mark.parametrize("text,phrase,expected", [
    ("Do you accept these terms of use?", "accept these terms of use", True),
    ("Do yau accept tbese terms of use?", "accept these terms of use", True),  # OCR slips
    ("golem-gpu-live login: golem (automatic login)", "login: golem (automatic login)", True),
    ("Persistent storage\n/dev/sda5 Golem storage", "Golem storage", True),
    ("terms of use accept these", "accept these terms of use", False),  # order matters
    ("Network", "no compatible GPU", False),
])
def test_ocr_text_is_matched_word_by_word_with_tolerance(text: str, phrase: str,
                                                         expected: bool) -> None:
    from boot_test.screen import contains

    assert contains(text, phrase) is expected


# --- boot_test.session: a booted guest with QMP and a forwarded SSH port --------------


def test_session_boots_with_qmp_and_ssh_forwarding_and_stops_qemu(
        fake_qemu: Path, tmp_path: Path) -> None:
    from boot_test.qemu import NO_AUTOSTART_ENTRY
    from boot_test.session import booted

    temp = tmp_path / "temp"
    temp.mkdir()
    options = boot_options(fake_qemu, tmp_path)
    with booted(options, temp, tmp_path, ssh_port=2222, ssh_key=tmp_path / "key") as session:
        menu = ConsoleWatcher("skip_autostart", [select_menu_entry(NO_AUTOSTART_ENTRY)])
        assert session.wait_serial("skip_autostart", 10, menu)
        assert session.wait_serial("GNU GRUB", 0)  # already seen: no waiting
        assert not session.wait_serial("never printed", 0.5)
        assert "Command line: boot=live skip_autostart" in session.serial_text()
    argv = (tmp_path / "qemu.argv").read_text().splitlines()
    assert f"unix:{temp / 'qmp.sock'},server=on,wait=off" in argv
    assert "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert process_gone(tmp_path / "qemu.pid")


def test_session_without_ssh_refuses_ssh(fake_qemu: Path, tmp_path: Path) -> None:
    from boot_test.session import booted

    temp = tmp_path / "temp"
    temp.mkdir()
    with booted(boot_options(fake_qemu, tmp_path), temp, tmp_path) as session:
        assert session.wait_serial("GNU GRUB", 10)  # it has started (and written its argv)
        with pytest.raises(RuntimeError, match="booted without SSH access"):
            session.ssh("true")
    argv = (tmp_path / "qemu.argv").read_text().splitlines()
    assert "user,model=virtio-net-pci" in argv


def test_a_cancelled_watch_stops_within_a_read() -> None:
    clock = FakeClock()
    console = ScriptedConsole([b"Booting", b" the kernel"], clock)
    reads = iter([False, True])
    outcome = watch_console(console, ConsoleWatcher("login:", []), 60, io.BytesIO(), clock,
                            cancelled=lambda: next(reads))
    assert outcome == "cancelled"
    assert console.chunks == [b" the kernel"]  # one read, then the stop was seen
