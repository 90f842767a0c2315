"""The layers import downhill only: api -> sessions -> engine -> model and store (siblings), with
errors, config, metrics and logs shared; and no route reaches through the service into the store or
the engine (``.store`` / ``.engine``). Read from the source, so a new import that breaks the rule
fails here rather than in review."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
SHARED = {"errors", "config", "metrics", "logs", "__version__"}
MAY_IMPORT = {
    "api": {"api", "sessions"},
    "sessions": {"sessions", "engine", "model", "store", "stats"},
    "engine": {"engine", "model", "store"},
    "model": {"model"},
    "store": {"store"},
}


def imported(path: Path) -> set[str]:
    """The ``app`` parts a module imports (``app.sessions.service`` -> ``sessions``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "app":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("app.")}
    return found


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for layer, allowed in MAY_IMPORT.items():
        for path in sorted((APP / layer).rglob("*.py")):
            uphill = imported(path) - allowed - SHARED
            if uphill:
                wrong.append(f"{path.relative_to(APP)} imports app.{', app.'.join(sorted(uphill))}")
    assert not wrong, "\n".join(wrong)


def test_no_route_reaches_into_the_store_or_the_engine():
    reaching = []
    for path in sorted((APP / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("store", "engine"):
                reaching.append(f"{path.relative_to(APP)}:{node.lineno} .{node.attr}")
    assert not reaching, "\n".join(reaching)
