"""The layer direction of DESIGN.md §2: each package imports only the layers above it."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "duro"

BASE = {"errors", "ids", "codec", "clock", "config", "exports_config", "config_admin", "config_assets", "config_values"}
ALLOWED = {
    "base": BASE,
    "core": BASE | {"core"},
    "storage": BASE | {"core", "storage"},
    "runtime": BASE | {"core", "storage", "runtime"},
    "api": BASE | {"core", "storage", "runtime", "api"},
    "compat": BASE | {"core", "storage", "runtime", "api", "compat"},
    "http": BASE | {"core", "storage", "runtime", "api", "http"},
    "cluster": BASE | {"core", "storage", "runtime", "cluster"},
}


def _layer(path: pathlib.Path) -> str | None:
    rel = path.relative_to(SRC).parts
    if len(rel) == 1:
        stem = path.stem
        return "base" if stem in BASE else None
    return rel[0] if rel[0] in ALLOWED else None


def _duro_imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(SRC).parts
    pkg = list(rel[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                else:  # "from . import x" at top level
                    found.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == "duro":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "duro" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_respects_the_layer_direction():
    violations = []
    for path in SRC.rglob("*.py"):
        layer = _layer(path)
        if layer is None:
            continue
        for target in _duro_imports(path):
            tlayer = "base" if target in BASE else target
            if tlayer == "base":
                ok = target in ALLOWED[layer]
            else:
                ok = tlayer in ALLOWED[layer]
            if not ok:
                violations.append(f"{path.relative_to(SRC)} imports duro.{target}")
    assert not violations, "layer violations:\n" + "\n".join(sorted(violations))


def test_the_checker_sees_imports():
    # Guard against a checker that silently finds nothing.
    assert "storage" in _duro_imports(SRC / "runtime" / "activation.py")
    assert "runtime" in _duro_imports(SRC / "api" / "namespace.py")
