"""The layering of DESIGN.md, checked by importing each layer in a fresh interpreter.

Each layer may import only the layers below it, and the core never imports IPython,
ipywidgets or matplotlib. A test per layer lists what importing it loaded, so "strategies
imports the runner" or "reading a report starts the fork server" fails here by name.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# bigviz's top-level modules and packages, bottom to top (DESIGN.md "Architecture")
CORE_LIBS = ("IPython", "ipywidgets", "matplotlib")
ABOVE_RUNNER = ("tables", "plots", "report", "widgets", "magics", "magic_args", "cli",
                "commands")
UI = ("widgets", "magics", "magic_args", "cli", "commands")

# layer -> (bigviz parts it must not load, third-party libraries it must not load)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bigviz": (
        ("data", "options", "progress", "recorder", "checkpoint", "models", "strategies",
         "runner", *ABOVE_RUNNER),
        ("torch", "numpy", *CORE_LIBS),
    ),
    "bigviz.units": (
        ("data", "options", "progress", "recorder", "checkpoint", "models", "strategies",
         "runner", *ABOVE_RUNNER),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.data": (
        ("options", "progress", "recorder", "checkpoint", "models", "strategies", "runner",
         *ABOVE_RUNNER),
        ("torch", "numpy", *CORE_LIBS),
    ),
    # the one options spec and progress state every front end shares: plain, cheap
    "bigviz.options": (
        ("recorder", "checkpoint", "models", "strategies", "runner", *ABOVE_RUNNER),
        ("torch", "numpy", *CORE_LIBS),
    ),
    "bigviz.progress": (
        ("recorder", "checkpoint", "models", "strategies", "runner", *ABOVE_RUNNER),
        ("torch", "numpy", *CORE_LIBS),
    ),
    "bigviz.recorder": (
        ("checkpoint", "models", "strategies", "runner", *ABOVE_RUNNER),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.checkpoint": (
        ("data", "recorder", "models", "strategies", "runner", *ABOVE_RUNNER),
        CORE_LIBS,
    ),
    "bigviz.models": (
        ("recorder", "strategies", "runner", *ABOVE_RUNNER),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.strategies": (("runner", *ABOVE_RUNNER), CORE_LIBS),
    "bigviz.runner": (ABOVE_RUNNER, CORE_LIBS),
    # `bigviz advise`: predictions (strategies) and, for --verify, the runner
    "bigviz.advisor": (ABOVE_RUNNER, CORE_LIBS),
    "bigviz.tables": (
        ("recorder", "checkpoint", "strategies", "runner", "plots", "report", *UI),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.report": (
        ("recorder", "checkpoint", "models", "strategies", "runner", "plots", *UI),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.plots": (
        ("recorder", "checkpoint", "models", "strategies", "runner", "report", *UI),
        ("torch", "IPython", "ipywidgets"),
    ),
    "bigviz.widgets": (
        ("recorder", "checkpoint", "strategies", "runner", "magics", "magic_args", "cli",
         "commands"),
        ("torch", *CORE_LIBS),
    ),
    "bigviz.magics": (
        ("recorder", "checkpoint", "strategies", "runner", "widgets", "plots"),
        ("torch", "ipywidgets", "matplotlib"),
    ),
    # the magics' argument parsers (IPython's UsageError): no more than the magics load
    "bigviz._magic_args": (
        ("recorder", "checkpoint", "strategies", "runner", "widgets", "plots", "magics"),
        ("torch", "ipywidgets", "matplotlib"),
    ),
    "bigviz.cli": (
        ("recorder", "checkpoint", "models", "strategies", "runner", "report", "plots",
         "widgets", "magics", "magic_args"),
        ("torch", *CORE_LIBS),
    ),
}

# what a layer is used for right after import must not load more than the import did
EXERCISE: dict[str, str] = {
    "bigviz": "mod.parse_size('1MB'); mod.format_size(1)",
    "bigviz.cli": "mod.build_parser().parse_args(['inspect', 'x'])",
    "bigviz.report": "from bigviz.data import Recording; mod.dumps(Recording())",
}

_PROBE = """
import importlib, json, sys
mod = importlib.import_module(sys.argv[1])
exec(sys.argv[2])
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(module: str) -> set[str]:
    # -I: isolated (no user site, no cwd on sys.path): what a fresh `import` really costs
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, module, EXERCISE.get(module, "")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("layer", sorted(RULES))
def test_a_layer_loads_nothing_above_it(layer: str) -> None:
    # GIVEN the parts this layer must not pull in
    parts, libs = RULES[layer]
    # WHEN it is imported alone in a fresh interpreter (and used, see EXERCISE)
    loaded = _loaded(layer)
    # THEN none of the layers above it and none of the forbidden libraries were imported
    above = sorted(m for m in loaded if m.split(".")[0] == "bigviz" and "." in m
                   and m.split(".")[1].lstrip("_") in parts)
    heavy = sorted(lib for lib in libs if lib in loaded)
    assert above == [], f"importing {layer} loaded {above}"
    assert heavy == [], f"importing {layer} loaded {heavy}"
    assert layer in loaded


def test_every_top_level_part_has_a_rule() -> None:
    # GIVEN bigviz's top-level modules and packages on disk
    import pathlib

    import bigviz

    root = pathlib.Path(bigviz.__file__).parent
    names = {p.stem for p in root.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())
             and not p.name.startswith("_")}
    # THEN each is a layer of RULES or named as forbidden somewhere (so a new package
    # has to be placed in the layering before it lands)
    placed = {name.split(".")[-1] for name in RULES} | {
        part for parts, _ in RULES.values() for part in parts}
    assert names - placed - {"testing"} == set()
