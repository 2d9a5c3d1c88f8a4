"""Fuzz the first-boot TOML (issue 10, tests): every document is valid or a config error.

Generated documents mix the real keys with random ones, every TOML type, nesting,
unicode and huge numbers, plus raw text that is mostly not TOML at all. Each goes
through `golemwz check` (the boot's reading and validation) and through the
wizard's own loading on a fake machine; the outcome must be "valid" (exit 0) or
config errors (exit 2), never an internal error or a traceback.
"""

from __future__ import annotations

import datetime
import io
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import tomli_w
from golemwz.check import run_check
from golemwz.config import KEYS, PROVIDER_ENV_NAMES, Settings
from golemwz.errors import ConfigError
from golemwz.wizard import Options, Wizard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wizard_fakes import FakeMachine, ScriptedUI

KEY_NAMES = st.one_of(st.sampled_from(KEYS), st.sampled_from(sorted(PROVIDER_ENV_NAMES)),
                      st.sampled_from(["PATH", "LD_PRELOAD", "YA_NET_TYPE\n", "env"]),
                      st.text(min_size=1, max_size=12))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["auto", "0.25", "1e308", "-0", "1_000", "0000:01:00.0",
                     "0x" + "ab" * 20, "2a5ae4b8-3b4c-4b5e-9a43-90f3e6c1c0de", "NaN"]),
    st.datetimes(min_value=datetime.datetime(1, 1, 1)),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(KEY_NAMES, inner, max_size=4)),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(KEY_NAMES, VALUES, max_size=8)


def as_text(document: dict[str, object]) -> str:
    return tomli_w.dumps(document)


RAW_TEXT = st.one_of(
    DOCUMENTS.map(as_text),
    st.text(max_size=200),
    # Deep nesting written out, beyond what a generated tree reaches.
    st.integers(min_value=1, max_value=4000).map(lambda n: "a = " + "[" * n + "]" * n),
    st.integers(min_value=1, max_value=6000).map(lambda n: f"init_price = {'9' * n}"),
)


def check_text(directory: Path, text: str) -> tuple[int, str]:
    path = directory / "golemwz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    out = io.StringIO()
    with redirect_stdout(out):
        status = run_check(path, out)
    return status, out.getvalue()


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(RAW_TEXT)
def test_check_gives_valid_or_config_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        status, out = check_text(Path(directory), text)
    assert status in (0, 2), out
    assert "internal error" not in out and "Traceback" not in out
    if status == 0:
        assert out.endswith(": valid\n")


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(RAW_TEXT)
def test_the_wizard_loads_each_document_or_raises_a_config_error(text: str) -> None:
    """The boot's path: ConfStore reading the conf partition, parse_layer, the merge."""
    with tempfile.TemporaryDirectory() as directory:
        machine = FakeMachine(Path(directory))
        machine.write_first_boot(text)
        wizard = Wizard(options=Options(), flags=Settings(),
                        services=machine.services(ScriptedUI()))
        wizard.store.open()
        try:
            wizard.load_configuration()  # bad values are shown (interactive) or raised
        except ConfigError as error:
            assert error.exit_status == 2
        finally:
            wizard.store.close()
