"""The house is one-way: `edge/` is the spine and its interfaces (the driver protocol is edge/driver.py) and
knows no device family, rule, simulator or benchmark; only the composition root (the gateway's wiring, the
command line, the demo) imports `drivers/`, `rules/`, `sinks/`, `firmware_sim/` and `bench/`.

Read from the source with `ast` (every import statement, at module level or inside a function), so a lazy
import inside a route counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("drivers", "rules", "sinks", "firmware_sim", "bench")
COMPOSITION_ROOT = {
    "edge/gateway.py": "wires the families (drivers.registry), the rules and the sinks into one gateway",
    "edge/cli.py": "the command line: run, check-config, demo, bench, fleet-sim",
    "edge/demo.py": "the simulated store",
    # The manifest's one schema is composed here from the section models each package owns (the BLE
    # family's `beacons:`, the door family's `traffic:`, the rules' sections, the EPCIS sink's), and a
    # device section is validated by its family's model chosen by `type:` (drivers.registry).
    "edge/config.py": "composes the manifest schema from the packages' section models",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_spine_imports_no_family_rule_sink_simulator_or_bench() -> None:
    wrong = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in COMPOSITION_ROOT:
            continue
        wrong += [f"{rel}:{line}: imports {mod}" for line, mod in _imports(path) if mod.split(".")[0] in OUTSIDE]
    assert not wrong, "edge/ must not know these (put the interface in edge/, the wiring in the root):\n" + \
        "\n".join(wrong)


def test_the_composition_root_list_is_current() -> None:
    # an entry that no longer imports from outside is taken off the list, so the exception does not linger
    for rel in COMPOSITION_ROOT:
        assert any(m.split(".")[0] in OUTSIDE for _, m in _imports(ROOT / rel)), rel
