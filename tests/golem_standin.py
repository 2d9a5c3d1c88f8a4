#!/usr/bin/python3
"""Stand-in for yagna v0.17.6's `golemsp` and `ya-provider`, installed by the fake
golem-provider package (tests/golem_fakes.py) as both programs; which one it is comes
from the name it runs under.

It knows the command lines of the pinned version and refuses the rest the way the real
ones do: both parse with structopt 0.3 on clap 2.34 (yagna v0.17.6 Cargo.lock), whose
errors go to stderr as `error: ...`, a USAGE line and `For more information try --help`,
with exit status 1 (clap 2's Error::exit; clap 3 and later use 2).

Every call is appended as one JSON line to ~/.golem-standin/calls.jsonl (the caller's
HOME): the program, argv and working directory; for `golemsp run` also its environment
and RLIMIT_MEMLOCK (what `ulimit -l` shows), the limit QEMU needs to pin guest RAM.
Standard library only: it runs on the image's python3.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "0.17.6"
RECORD_DIR = ".golem-standin"
RECORD_FILE = "calls.jsonl"
CLAP_ERROR_STATUS = 1

Check = Callable[[str], "str | None"]


class UsageError(Exception):
    """A clap 2 parse error: `message` is the text after `error: `."""


class RuntimeFailure(Exception):
    """A failure after parsing (anyhow's `Error: ...`, exit status 1)."""


# --- value checks: what the real FromStr implementations accept --------------------

RUST_FLOAT = re.compile(r"[+-]?(inf|infinity|nan|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", re.I)
BYTES = re.compile(r"\d+(\.\d+)?\s*([kKmMgGtTpPeE]i?[bB]?|[bB])?")  # byte-unit 4


def _usize(value: str) -> str | None:
    return None if value.isascii() and value.isdigit() else "invalid digit found in string"


def _f64(value: str) -> str | None:
    return None if RUST_FLOAT.fullmatch(value) else "invalid float literal"


def _node_id(value: str) -> str | None:
    # ya-client-model NodeId::from_str: 0x and 40 hex digits
    return None if re.fullmatch(r"0x[0-9a-fA-F]{40}", value) else "Invalid NodeId"


def _bytes(value: str) -> str | None:
    return None if BYTES.fullmatch(value) else "the input is not a valid byte amount"


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return f"'{value}' isn't a valid value\n\t[possible values: {', '.join(choices)}]"
    return check


def _key_float(value: str) -> str | None:
    # ya-provider startup_config.rs parse_key_val: KEY=value, value an f64
    if "=" not in value:
        return f"invalid KEY=value: no `=` found in `{value}`"
    return _f64(value.split("=", 1)[1])


# --- a small model of clap 2 -------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    name: str  # without the leading --
    value: str | None = None  # the value's name when the flag takes one
    check: Check | None = None
    multiple: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    flags: tuple[Flag, ...] = ()
    positionals: tuple[str, ...] = ()  # required, in order
    optional_positionals: tuple[str, ...] = ()
    subcommands: tuple[Command, ...] = ()
    one_of_required: tuple[str, ...] = ()  # an ArgGroup(required): one of these flags


@dataclass
class Parsed:
    path: list[str] = field(default_factory=list)  # subcommand names
    values: dict[str, list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)


def _usage(program: str, path: Sequence[str]) -> str:
    return f"\n\nUSAGE:\n    {' '.join([program, *path])} [FLAGS] [OPTIONS]\n\n" \
           "For more information try --help"


def parse(program: str, root: Command, argv: Sequence[str],
          global_flags: tuple[Flag, ...] = ()) -> Parsed:
    parsed = Parsed()
    command = root
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help", "-V", "--version"):
            raise SystemExit(_help(program, parsed.path, command, arg))
        if arg.startswith("--") and len(arg) > 2:
            name, has_value, inline = arg[2:].partition("=")
            flag = next((f for f in (*command.flags, *global_flags) if f.name == name), None)
            if flag is None:
                raise UsageError(f"Found argument '{arg}' which wasn't expected, or isn't "
                                 "valid in this context" + _usage(program, parsed.path))
            shown = f"--{flag.name}" + (f" <{flag.value}>" if flag.value else "")
            if flag.name in parsed.values and not flag.multiple:
                raise UsageError(f"The argument '{shown}' was provided more than once, but "
                                 "cannot be used multiple times" + _usage(program, parsed.path))
            if flag.value is None:
                if has_value:
                    raise UsageError(f"The flag '{shown}' doesn't take a value"
                                     + _usage(program, parsed.path))
                parsed.values.setdefault(flag.name, []).append("")
                continue
            if not has_value:
                if not args:
                    raise UsageError(f"The argument '{shown}' requires a value but none was "
                                     "supplied" + _usage(program, parsed.path))
                inline = args.pop(0)
            problem = flag.check(inline) if flag.check else None
            if problem:
                raise UsageError(f"Invalid value for '{shown}': {problem}")
            parsed.values.setdefault(flag.name, []).append(inline)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"Found argument '{arg}' which wasn't expected, or isn't valid "
                             "in this context" + _usage(program, parsed.path))
        elif command.subcommands:
            sub = next((c for c in command.subcommands if c.name == arg), None)
            if sub is None:
                raise UsageError(f"The subcommand '{arg}' wasn't recognized"
                                 + _usage(program, parsed.path))
            _check_complete(program, parsed, command)
            parsed.path.append(sub.name)
            command = sub
        elif len(parsed.positionals) < len(command.positionals + command.optional_positionals):
            parsed.positionals.append(arg)
        else:
            raise UsageError(f"Found argument '{arg}' which wasn't expected, or isn't valid in "
                             "this context" + _usage(program, parsed.path))
    if command.subcommands:
        raise UsageError(f"'{' '.join([program, *parsed.path])}' requires a subcommand, but one "
                         "was not provided" + _usage(program, parsed.path))
    _check_complete(program, parsed, command)
    return parsed


def _check_complete(program: str, parsed: Parsed, command: Command) -> None:
    missing = [f"<{name}>" for name in command.positionals[len(parsed.positionals):]]
    if command.one_of_required and not any(n in parsed.values for n in command.one_of_required):
        missing.append("<" + "|".join(f"--{n}" for n in command.one_of_required) + ">")
    if missing:
        raise UsageError("The following required arguments were not provided:\n    "
                         + "\n    ".join(missing) + _usage(program, parsed.path))


def _help(program: str, path: Sequence[str], command: Command, arg: str) -> int:
    if arg in ("-V", "--version"):
        print(f"{program} {VERSION}")
        return 0
    print(f"{' '.join([program, *path])} {VERSION}")
    for sub in command.subcommands:
        print(f"    {sub.name}")
    for flag in command.flags:
        print(f"    --{flag.name}" + (f" <{flag.value}>" if flag.value else ""))
    return 0


# --- golemsp (golem_cli/src: main.rs, setup.rs RunConfig, settings.rs, manifest.rs) -----

GOLEMSP_RUN_FLAGS = (
    Flag("subnet", "subnet"),
    Flag("account", "account", _node_id),
    Flag("payment-network", "payment-network", _one_of("mainnet", "testnet")),
    Flag("debug"),
    Flag("log-dir", "log-dir"),
    Flag("no-interactive"),
    Flag("disable-auto-cleanup"),
)
GOLEMSP = Command("golemsp", subcommands=(
    # hidden; RunConfig has a hidden positional node name too
    Command("setup", GOLEMSP_RUN_FLAGS, optional_positionals=("node-name",)),
    Command("manifest-bundle", subcommands=(Command("add", positionals=("path",)),)),
    Command("run", GOLEMSP_RUN_FLAGS, optional_positionals=("node-name",)),
    Command("stop"),
    Command("settings", subcommands=(
        Command("set", (
            Flag("node-name", "node-name"),
            Flag("cores", "num", _usize),
            Flag("memory", "bytes", _bytes),
            Flag("disk", "bytes", _bytes),
            Flag("starting-fee", "GLM (float)", _f64),
            Flag("env-per-hour", "GLM (float)", _f64),
            Flag("cpu-per-hour", "GLM (float)", _f64),
            Flag("account", "account", _node_id),
            Flag("payment-network", "payment-network", _one_of("mainnet", "testnet")),
        )),
        Command("show"),
    )),
    Command("status"),
    Command("consent", subcommands=(
        Command("show"), Command("allow-all"), Command("deny-all"), Command("unset-all"),
        Command("allow", positionals=("scope",)), Command("deny", positionals=("scope",)),
    )),
))
# The real golemsp hands an unknown subcommand to `yagna` (external_subcommand); the
# stand-in has no yagna behind it and refuses it like a missing command.

# manifest.rs: these directories are read with fs::read_dir, a missing one is an error;
# whitelist file stems must name a WhitelistType.
BUNDLE_DIRS = ("whitelist", "certs", "golem-certs")
WHITELIST_TYPES = ("strict", "regex")


def add_manifest_bundle(path: Path) -> dict[str, list[str]]:
    added: dict[str, list[str]] = {}
    for sub in BUNDLE_DIRS:
        directory = path / sub
        if not directory.is_dir():
            raise RuntimeFailure(f"No such file or directory (os error 2): {directory}")
        added[sub] = sorted(str(p.resolve()) for p in directory.iterdir() if p.resolve().is_file())
    for whitelist in added["whitelist"]:
        if Path(whitelist).stem not in WHITELIST_TYPES:
            raise RuntimeFailure("Matching variant not found")
    return added


def golemsp(parsed: Parsed, state: State) -> int:
    if parsed.path == ["run"]:
        state.record_extra({"env": dict(os.environ), "memlock": memlock_limit()})
        # Like the real service: runs until stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        if os.environ.get("GOLEM_STANDIN_RUN_EXITS") != "1":
            while True:
                signal.pause()
        return 0
    if parsed.path == ["manifest-bundle", "add"]:
        state.update("manifest-bundles", [add_manifest_bundle(Path(parsed.positionals[0]))])
    elif parsed.path == ["settings", "set"]:
        state.update("settings", [{k: v[-1] for k, v in parsed.values.items()}])
    elif parsed.path == ["settings", "show"]:
        print(json.dumps(state.load().get("settings", []), indent=2))
    elif parsed.path == ["status"]:
        print("Status: stand-in (not running a node)")
    return 0


def memlock_limit() -> dict[str, str]:
    def shown(limit: int) -> str:  # as `ulimit -l` prints it: KiB or unlimited
        return "unlimited" if limit == resource.RLIM_INFINITY else str(limit // 1024)
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return {"soft": shown(soft), "hard": shown(hard)}


# --- ya-provider (agent/provider/src/startup_config.rs, cli/*.rs) ---------------------

YA_PROVIDER_GLOBAL_FLAGS = (
    Flag("exe-unit-path", "exe-unit-path"),
    Flag("data-dir", "data-dir"),
    Flag("log-dir", "log-dir"),
    Flag("cert-dir", "cert-dir"),
    Flag("rt-cores", "rt-cores", _usize),
    Flag("rt-mem", "rt-mem", _f64),
    Flag("rt-storage", "rt-storage", _f64),
    Flag("json"),
)
PRESET_PARAMS = (
    Flag("no-interactive"),
    Flag("preset-name", "preset-name"),
    Flag("exe-unit", "exe-unit"),
    Flag("pricing", "pricing"),
    Flag("price", "price", _key_float, multiple=True),
)
RUN_FLAGS = (Flag("node-name", "node-name"), Flag("subnet", "subnet"),
             Flag("account", "account", _node_id),
             Flag("payment-network", "payment-network", multiple=True), Flag("debug"))
YA_PROVIDER = Command("ya-provider", subcommands=(
    Command("run", RUN_FLAGS),
    Command("self-test", RUN_FLAGS),
    Command("config", subcommands=(Command("get", optional_positionals=("name",)),
                                   Command("set", RUN_FLAGS[:4]))),
    Command("preset", subcommands=(
        Command("list"),
        Command("active"),
        Command("create", PRESET_PARAMS),
        Command("remove", positionals=("name",)),
        Command("update", (Flag("all"), Flag("name", "name", multiple=True), *PRESET_PARAMS),
                one_of_required=("all", "name")),
        Command("activate", positionals=("name",)),
        Command("deactivate", positionals=("name",)),
    )),
    Command("pre-install"),
    Command("profile", subcommands=(Command("list"), Command("active"))),
    Command("exe-unit", subcommands=(Command("list"),)),
    Command("keystore", subcommands=(Command("list"),)),
    Command("whitelist", subcommands=(Command("list"),)),
    Command("clean", optional_positionals=("age",)),
    Command("rule", subcommands=(Command("list"),)),
))


def plugin_pattern(parsed: Parsed, home: Path) -> Path:
    """startup_config.rs default_plugins: ~/.local/lib/yagna/plugins when it exists."""
    given = parsed.values.get("exe-unit-path") or [os.environ.get("EXE_UNIT_PATH", "")]
    if given[-1]:
        return Path(given[-1])
    user = home / ".local/lib/yagna/plugins"
    return (user if user.exists() else Path("/usr/lib/yagna/plugins")) / "ya-*.json"


def exe_units(pattern: Path) -> list[dict[str, object]]:
    units: list[dict[str, object]] = []
    for descriptor in sorted(pattern.parent.glob(pattern.name)):
        for unit in json.loads(descriptor.read_text()):
            for key in ("supervisor-path", "runtime-path"):  # relative to the JSON file
                if key in unit and not Path(unit[key]).is_absolute():
                    unit[key] = str(descriptor.parent / unit[key])
            units.append(unit)
    return units


def ya_provider(parsed: Parsed, state: State) -> int:
    json_out = "json" in parsed.values
    presets: list[dict[str, object]] = state.load().get("presets", [])
    names = [str(p["name"]) for p in presets]
    path = parsed.path
    if path == ["exe-unit", "list"]:
        units = exe_units(plugin_pattern(parsed, state.home))
        for unit in units:
            for key in ("supervisor-path", "runtime-path"):
                if not Path(str(unit.get(key, ""))).exists():
                    print(f"ExeUnit {unit['name']}: {key} {unit.get(key)} does not exist",
                          file=sys.stderr)
        print(json.dumps(units, indent=2) if json_out else
              "Available ExeUnits:\n" + "\n".join(f"\nName: {u['name']}" for u in units))
    elif path == ["preset", "list"]:
        print(json.dumps(presets, indent=2) if json_out else "\n".join(names))
    elif path == ["preset", "create"]:
        preset = _preset_from(parsed)
        if "no-interactive" not in parsed.values:
            raise RuntimeFailure("the stand-in has no interactive mode: pass --no-interactive")
        if preset["name"] in names:
            raise RuntimeFailure(f"Preset name [{preset['name']}] already exists.")
        state.update("presets", presets + [preset], replace=True)
    elif path == ["preset", "update"]:
        targets = names if "all" in parsed.values else parsed.values["name"]
        unknown = [n for n in targets if n not in names]
        if unknown:
            raise RuntimeFailure(f"Preset [{unknown[0]}] doesn't exist.")
        update = {k: v for k, v in _preset_from(parsed).items() if v}
        state.update("presets", [{**p, **update, "name": p["name"]} if p["name"] in targets
                                 else p for p in presets], replace=True)
    elif path[:1] == ["preset"] and path[1] in ("activate", "deactivate", "remove"):
        if parsed.positionals[0] not in names:
            raise RuntimeFailure(f"Preset [{parsed.positionals[0]}] doesn't exist.")
        state.update(f"preset-{path[1]}", [parsed.positionals[0]])
    return 0


def _preset_from(parsed: Parsed) -> dict[str, object]:
    value = parsed.values.get
    return {"name": (value("preset-name") or [""])[-1],
            "exeunit-name": (value("exe-unit") or [""])[-1],
            "pricing-model": (value("pricing") or [""])[-1],
            "usage-coeffs": {k: float(v) for k, v in
                             (p.split("=", 1) for p in value("price") or [])}}


# --- recording and state -----------------------------------------------------------


@dataclass
class State:
    home: Path
    program: str
    argv: list[str]

    @property
    def dir(self) -> Path:
        return self.home / RECORD_DIR

    def record(self, extra: dict[str, object] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"program": self.program, "argv": self.argv, "cwd": os.getcwd(),
                 **(extra or {})}
        with (self.dir / RECORD_FILE).open("a") as calls:
            calls.write(json.dumps(entry) + "\n")

    def record_extra(self, extra: dict[str, object]) -> None:
        self.record({"status": "running", **extra})

    def load(self) -> dict[str, list]:  # type: ignore[type-arg]
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def update(self, key: str, items: list, replace: bool = False) -> None:  # type: ignore[type-arg]
        data = self.load()
        data[key] = items if replace else data.get(key, []) + items
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state.json").write_text(json.dumps(data, indent=2) + "\n")


PROGRAMS: dict[str, tuple[Command, tuple[Flag, ...], Callable[[Parsed, State], int]]] = {
    "golemsp": (GOLEMSP, (), golemsp),
    "ya-provider": (YA_PROVIDER, YA_PROVIDER_GLOBAL_FLAGS, ya_provider),
}


def main(program: str, argv: Sequence[str]) -> int:
    root, global_flags, handler = PROGRAMS[program]
    home = Path(os.environ.get("HOME") or Path.home())
    state = State(home, program, list(argv))
    try:
        parsed = parse(program, root, argv, global_flags)
    except UsageError as error:
        state.record({"status": "usage-error", "error": str(error)})
        print(f"error: {error}", file=sys.stderr)
        return CLAP_ERROR_STATUS
    if parsed.path != ["run"]:
        state.record({"status": "ok"})
    try:
        return handler(parsed, state)
    except RuntimeFailure as failure:
        print(f"Error: {failure}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[0]).name, sys.argv[1:]))
