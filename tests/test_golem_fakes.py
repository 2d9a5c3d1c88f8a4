"""The fake GOLEM packages and the golemsp / ya-provider stand-in: they refuse what the
pinned yagna (v0.17.6) refuses and accept what the wizard sends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from golemwz.errors import CommandFailed
from golemwz.layout import SystemLayout
from golemwz.provider import PRESET_NAME, ProviderSettings, setup_provider
from golemwz.runner import CommandResult

from builder.profile import load_profile
from tests import golem_fakes
from tests.conftest import PROJECT_ROOT
from tests.golem_standin import RECORD_DIR, RECORD_FILE

ACCOUNT = "0x" + "ab" * 20


class StandinRunner:
    """The wizard's Runner, with golemsp and ya-provider being the stand-in for real."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.other: list[tuple[str, ...]] = []  # commands not under test (chown ...)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for program in ("golemsp", "ya-provider"):
            link = bin_dir / program
            if not link.exists():
                link.symlink_to(golem_fakes.STANDIN)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            env: Mapping[str, str] | None = None, check: bool = True) -> CommandResult:
        args = list(argv)
        if args[:2] == ["runuser", "-u"] and "--" in args:
            args = args[args.index("--") + 1:]
        if args[0] not in ("golemsp", "ya-provider"):
            self.other.append(tuple(argv))
            return CommandResult(tuple(argv), 0, "")
        proc = subprocess.run([sys.executable, str(self.bin_dir / args[0]), *args[1:]],
                              input=input, capture_output=True,
                              env={"PATH": os.environ["PATH"], **(env or {})}, check=False)
        if check and proc.returncode != 0:
            raise CommandFailed(tuple(argv), proc.returncode, proc.stderr.decode())
        return CommandResult(tuple(argv), proc.returncode, proc.stdout.decode())


def standin(tmp_path: Path, program: str, *args: str,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    link = tmp_path / "bin" / program
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(golem_fakes.STANDIN)
    return subprocess.run([sys.executable, str(link), *args], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
                               **(env or {})}, timeout=30)


def calls(home: Path) -> list[dict[str, object]]:
    lines = (home / RECORD_DIR / RECORD_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def install_bundle(target: Path) -> None:
    """The fake ya-installer-resources' bundle, at `target`."""
    prefix = golem_fakes.INSTALLER_DIR + "/"
    for rel, text in golem_fakes.ya_installer_resources().files:
        (target / rel.removeprefix(prefix)).parent.mkdir(parents=True, exist_ok=True)
        (target / rel.removeprefix(prefix)).write_text(text)


def test_the_wizards_provider_setup_is_accepted_first_run_and_rerun(tmp_path: Path) -> None:
    layout = SystemLayout.under(tmp_path / "root")
    layout.golem_home.mkdir(parents=True)
    install_bundle(layout.installer_resources_dir)
    runner = StandinRunner(tmp_path / "bin")
    settings = ProviderSettings(glm_account=ACCOUNT, glm_per_hour=Decimal("0.5"),
                                init_price=Decimal("0.01"), node_name="rig-1")
    setup_provider(settings, layout, runner)
    setup_provider(settings, layout, runner)  # second boot: the preset exists, is updated
    recorded = calls(layout.golem_home)
    assert all(c["status"] == "ok" for c in recorded), recorded
    argvs = [[c["program"], *c["argv"]] for c in recorded]  # type: ignore[list-item]
    assert ["golemsp", "setup", "--no-interactive"] in argvs
    assert ["golemsp", "manifest-bundle", "add", str(layout.installer_resources_dir)] in argvs
    assert ["golemsp", "settings", "set", "--node-name", "rig-1", "--account", ACCOUNT] in argvs
    assert [a[:3] for a in argvs].count(["ya-provider", "preset", "create"]) == 1
    assert [a[:3] for a in argvs].count(["ya-provider", "preset", "update"]) == 1
    state = json.loads((layout.golem_home / RECORD_DIR / "state.json").read_text())
    (preset,) = state["presets"]
    assert preset["name"] == PRESET_NAME and preset["exeunit-name"] == "vm-nvidia"
    assert preset["usage-coeffs"] == {"Duration": pytest.approx(0.5 / 3600), "CPU": 0.0,
                                      "Init price": 0.01}
    assert state["preset-activate"] == [PRESET_NAME, PRESET_NAME]
    (bundle, _) = state["manifest-bundles"]
    assert len(bundle["whitelist"]) == 2 and len(bundle["golem-certs"]) == 1


def test_the_wizards_setup_for_the_nodes_own_wallet_is_accepted(tmp_path: Path) -> None:
    """golem-gpu-imager's empty glm_account: golemsp's NodeId parser refuses `""`."""
    layout = SystemLayout.under(tmp_path / "root")
    layout.golem_home.mkdir(parents=True)
    install_bundle(layout.installer_resources_dir)
    settings = ProviderSettings(glm_account="", glm_per_hour=Decimal("1"),
                                init_price=Decimal("0"), node_name=None)
    setup_provider(settings, layout, StandinRunner(tmp_path / "bin"))
    recorded = calls(layout.golem_home)
    assert all(c["status"] == "ok" for c in recorded), recorded


@pytest.mark.parametrize(("program", "args", "message"), [
    ("golemsp", ["setup", "--no-interactive", "--price", "1"],
     "error: Found argument '--price' which wasn't expected, or isn't valid in this context"),
    ("golemsp", ["settings", "set", "--account", ""],
     "error: Invalid value for '--account <account>': Invalid NodeId"),
    ("golemsp", ["settings", "set", "--cores"],
     "error: The argument '--cores <num>' requires a value but none was supplied"),
    ("golemsp", ["settings", "set", "--payment-network", "holesky"],
     "'holesky' isn't a valid value"),
    ("golemsp", ["settings"], "error: 'golemsp settings' requires a subcommand"),
    ("golemsp", ["provider", "run"], "error: The subcommand 'provider' wasn't recognized"),
    ("golemsp", ["manifest-bundle", "add"],
     "error: The following required arguments were not provided:\n    <path>"),
    ("ya-provider", ["--pci-device", "0000:01:00.0", "run"], "Found argument '--pci-device'"),
    ("ya-provider", ["preset", "create", "--no-interactive", "--price", "Duration"],
     "invalid KEY=value: no `=` found in `Duration`"),
    ("ya-provider", ["preset", "create", "--price", "CPU=cheap"], "invalid float literal"),
    ("ya-provider", ["preset", "update", "--no-interactive", "--price", "CPU=0"],
     "<--all|--name>"),
    ("ya-provider", ["preset", "activate"], "<name>"),
    ("ya-provider", ["preset", "create", "--json", "--json"], "cannot be used multiple times"),
    ("ya-provider", ["exe-unit", "install"], "The subcommand 'install' wasn't recognized"),
])
def test_what_the_pinned_version_lacks_is_refused_like_clap_2(
        tmp_path: Path, program: str, args: list[str], message: str) -> None:
    result = standin(tmp_path, program, *args)
    assert result.returncode == 1  # clap 2.34 exits 1 on usage errors
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    (call,) = calls(tmp_path / "home")
    assert call["status"] == "usage-error" and call["argv"] == args


def test_global_flags_anywhere_and_inline_values(tmp_path: Path) -> None:
    result = standin(tmp_path, "ya-provider", "preset", "list", "--json",
                     "--data-dir=/tmp/x", "--rt-cores", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_manifest_bundle_needs_every_directory_the_real_one_reads(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    install_bundle(bundle)
    shutil.rmtree(bundle / "golem-certs")
    result = standin(tmp_path, "golemsp", "manifest-bundle", "add", str(bundle))
    assert result.returncode == 1
    assert "No such file or directory" in result.stderr and "golem-certs" in result.stderr


def test_golemsp_run_records_environment_and_memlock_limit(tmp_path: Path) -> None:
    result = standin(tmp_path, "golemsp", "run", env={"GOLEM_STANDIN_RUN_EXITS": "1",
                                                      "YAGNA_METRICS_GROUP": "GolemGpuLive"})
    assert result.returncode == 0, result.stderr
    (call,) = calls(tmp_path / "home")
    assert call["argv"] == ["run"] and call["status"] == "running"
    assert call["env"]["YAGNA_METRICS_GROUP"] == "GolemGpuLive"  # type: ignore[index]
    assert set(call["memlock"]) == {"soft", "hard"}  # type: ignore[arg-type]


def test_golemsp_run_keeps_running_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "golemsp"
    link.symlink_to(golem_fakes.STANDIN)
    proc = subprocess.Popen([sys.executable, str(link), "run"],
                            env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    finally:
        proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_exe_unit_list_reads_the_user_plugins_dir_when_it_exists(tmp_path: Path) -> None:
    """startup_config.rs default_plugins: ~/.local/lib/yagna/plugins hides /usr/lib's."""
    system = tmp_path / "usr/lib/yagna/plugins"
    for package in (golem_fakes.ya_runtime_vm(), golem_fakes.ya_runtime_vm_nvidia(),
                    golem_fakes.ya_runtime_wasi()):
        for rel, text in package.files:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text)
    listed = standin(tmp_path, "ya-provider", "exe-unit", "list", "--json",
                     "--exe-unit-path", str(system / "ya-*.json"))
    assert sorted(u["name"] for u in json.loads(listed.stdout)) == ["vm", "vm-nvidia",
                                                                     "wasmtime"]
    user = tmp_path / "home/.local/lib/yagna/plugins"
    user.mkdir(parents=True)
    shutil.copyfile(system / "ya-runtime-vm-nvidia.json", user / "ya-runtime-vm-nvidia.json")
    listed = standin(tmp_path, "ya-provider", "exe-unit", "list", "--json")
    assert [u["name"] for u in json.loads(listed.stdout)] == ["vm-nvidia"]


# --- the packages ------------------------------------------------------------------


@pytest.mark.tools
def test_fake_golem_provider_has_the_real_layout_and_preinst(tmp_path: Path) -> None:
    deb = golem_fakes.golem_provider().build(tmp_path)
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True,
                             text=True, check=True).stdout
    for path in ("usr/bin/yagna", "usr/bin/ya-provider", "usr/bin/golemsp", "usr/bin/gftp",
                 "usr/lib/yagna/plugins/exe-unit"):
        (line,) = [x for x in listing.splitlines() if x.endswith("./" + path)]
        assert line.startswith("-rwxr-xr-x root/root")
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True)
    assert (control / "preinst").stat().st_mode & 0o111
    assert "Template: golem/terms/subsidy-01\nType: select\nChoices: no, yes" in (
        control / "templates").read_text()


@pytest.mark.tools
@pytest.mark.parametrize("preseeded", [True, False])
def test_the_profiles_preseed_satisfies_the_preinst(tmp_path: Path, preseeded: bool) -> None:
    """The preinst run by debconf as dpkg would, on a scratch debconf database."""
    if shutil.which("debconf-set-selections") is None:
        pytest.skip("needs debconf")
    db = tmp_path / "debconf"
    db.mkdir()
    (tmp_path / "debconf.conf").write_text(
        f"Config: configdb\nTemplates: templatedb\n\nName: configdb\nDriver: File\n"
        f"Filename: {db}/config.dat\n\nName: templatedb\nDriver: File\n"
        f"Filename: {db}/templates.dat\n")
    env = {"PATH": os.environ["PATH"], "DEBCONF_SYSTEMRC": str(tmp_path / "debconf.conf"),
           "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_PACKAGE": "golem-provider"}
    if preseeded:
        lines = load_profile(PROJECT_ROOT, "golem-provider").preseed
        subprocess.run(["debconf-set-selections"], input="\n".join(lines) + "\n", text=True,
                       env=env, check=True)
    (tmp_path / "preinst").write_text(golem_fakes.PROVIDER_PREINST)
    (tmp_path / "preinst").chmod(0o755)
    (tmp_path / "templates").write_text(golem_fakes.PROVIDER_TEMPLATES)
    result = subprocess.run([str(tmp_path / "preinst"), "install"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert result.returncode == (0 if preseeded else 1), result.stderr
    upgrade = subprocess.run([str(tmp_path / "preinst"), "upgrade", "0.17.5"], env=env,
                             stdin=subprocess.DEVNULL, capture_output=True)
    assert upgrade.returncode == 0  # only a first install asks


def test_selected_and_decoy_tags_against_the_shipped_patterns() -> None:
    from apt_repo.components import load_components
    from apt_repo.github import Release, select_release

    components = {c.repo: c.for_channel("release") for c in load_components()}
    every = golem_fakes.SELECTED + golem_fakes.DECOYS
    for package in golem_fakes.SELECTED:
        releases = [Release(p.tag, p.prerelease, False, p.published, ()) for p in every
                    if p.repo == package.repo]
        assert select_release(releases, components[package.repo], package.repo).tag == \
            package.tag
    newest = {p.repo: p.published for p in golem_fakes.SELECTED}
    assert all(d.published > newest[d.repo] for d in golem_fakes.DECOYS)


def test_every_runtime_is_offered_after_the_wizard_copies_the_descriptors(
        tmp_path: Path) -> None:
    """The wizard's ~/.local/lib/yagna/plugins copy, read the way ya-provider reads it."""
    from golemwz.pci import PciAddress
    from golemwz.provider import install_runtimes

    root = tmp_path / "root"
    layout = SystemLayout.under(root)
    for package in (golem_fakes.ya_runtime_vm(), golem_fakes.ya_runtime_vm_nvidia(),
                    golem_fakes.ya_runtime_wasi()):
        for rel, text in package.files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    (root / golem_fakes.PLUGINS_DIR / "exe-unit").write_text("")
    install_runtimes(layout, [PciAddress.parse("0000:01:00.0"), PciAddress.parse("0000:02:00.0")])
    home = layout.golem_home
    link = tmp_path / "ya-provider"
    link.symlink_to(golem_fakes.STANDIN)
    listed = subprocess.run([sys.executable, str(link), "exe-unit", "list", "--json"],
                            capture_output=True, text=True, check=True,
                            env={"HOME": str(home), "PATH": os.environ["PATH"]})
    units = {u["name"]: u for u in json.loads(listed.stdout)}
    assert set(units) == {"vm", "vm-nvidia", "wasmtime"}
    assert listed.stderr == ""  # every supervisor and runtime path exists
    assert units["vm-nvidia"]["extra-args"] == [
        "--cap-handoff", "--runtime-arg=--pci-device=0000:01:00.0",
        "--runtime-arg=--pci-device=0000:02:00.0"]
