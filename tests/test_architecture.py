"""The import rules that keep the layout meaningful (README's code map).

The engine (builder/) runs any list of stages and knows none; libraries
(apt_repo/, disk/, boot_test/) make one kind of artifact and know neither the
stages nor the CLI; stages never import each other (only stages/catalog.py names
them all); the wizard runs on the image and imports nothing of the builder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

BUILDER_PACKAGES = ("builder", "stages", "apt_repo", "disk", "boot_test", "golem_live",
                    "release")
WIZARD = PROJECT_ROOT / "rootfs/wizard/golemwz"
HELPERS = ("shared", "secure_boot", "isolinux", "fast_install")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top_level(module: str) -> str:
    return module.split(".")[0]


def violations(package_dir: Path, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if top_level(module) in forbidden:
                found.append(f"{path.relative_to(PROJECT_ROOT)} imports {module}")
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("builder", {"stages", "apt_repo", "disk", "boot_test", "golem_live", "golemwz", "release"}),
    ("release", {"stages", "disk", "boot_test", "golem_live", "golemwz"}),
    ("apt_repo", {"stages", "disk", "boot_test", "golem_live", "golemwz"}),
    ("disk", {"stages", "apt_repo", "boot_test", "golem_live", "golemwz"}),
    ("boot_test", {"stages", "apt_repo", "disk", "golem_live", "golemwz"}),
    ("stages", {"golem_live", "boot_test", "golemwz"}),
])
def test_package_imports_only_what_its_layer_may(package: str, forbidden: set[str]) -> None:
    assert violations(PROJECT_ROOT / package, forbidden) == []


def test_stages_never_import_each_other() -> None:
    found = []
    for path in sorted((PROJECT_ROOT / "stages").glob("*.py")):
        if path.name in ("__init__.py", "catalog.py", *(f"{h}.py" for h in HELPERS)):
            continue
        for module in imported_modules(path):
            parts = module.split(".")
            # helper modules that are no stages: shared facts, Secure Boot checks,
            # isolinux's files, installing without fsync and with one initramfs
            if parts[0] == "stages" and len(parts) > 1 and parts[1] not in HELPERS:
                found.append(f"stages/{path.name} imports {module}")
    assert found == []


def test_the_wizard_imports_nothing_of_the_builder() -> None:
    assert violations(WIZARD, set(BUILDER_PACKAGES)) == []


def test_the_import_rule_sees_a_violation(tmp_path: Path) -> None:
    # The check itself must be able to fail: a module importing a stage is caught.
    (tmp_path / "bad.py").write_text("from stages.iso import IsoStage\nimport disk.layout\n")
    assert imported_modules(tmp_path / "bad.py") == {"stages.iso", "disk.layout"}


def test_every_package_says_what_it_is_for() -> None:
    for package in BUILDER_PACKAGES:
        doc = ast.get_docstring(ast.parse((PROJECT_ROOT / package / "__init__.py").read_text()))
        assert doc, f"{package}/__init__.py has no one-line purpose"


def test_the_readme_code_map_matches_the_tree() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    mapped = {line.split("`")[1].rstrip("/") for line in code_map.splitlines()
              if line.startswith("| `")}
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")}
    assert packages <= mapped, f"not in the code map: {sorted(packages - mapped)}"
    missing = [m for m in mapped if not (PROJECT_ROOT / m).exists()]
    assert missing == []
    for line in code_map.splitlines():  # files the map names inside a package exist
        if line.startswith("| `") and line.split("`")[1].endswith("/"):
            package = line.split("`")[1]
            spans = line.split("`")[3::2]  # the code spans after the package's own
            files = [n for n in spans if n.endswith((".py", ".toml"))]
            assert files or package in ("golem_live/", "boot_test/", "rootfs/", "tests/")
            for name in files:
                assert (PROJECT_ROOT / package / name).exists(), f"{package}{name}"
