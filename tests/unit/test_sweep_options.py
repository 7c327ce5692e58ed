"""The one options spec of a sweep: the Python API, ``bigviz sweep``, ``%bigviz sweep`` and
the dashboard cannot drift apart."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from bigviz import options, sweep
from bigviz._errors import ConfigError
from bigviz.options import SWEEP_OPTIONS

ROOT = Path(__file__).resolve().parents[2]

#: What the API takes that no front end asks for: callbacks, and knobs for experiments.
API_ONLY = {"interval_ms", "on_progress", "on_event", "cancel", "seed"}

#: One value per flag, for parsing the same command line with every front end's parser.
EXAMPLE_ARGV = {
    "--model": "mlp:2MB", "--strategies": "naive,meta", "--shard-sizes": "1MB,2MB",
    "--device-map": "cpu,disk", "--format": "bin", "--dtype": "float16",
    "--ram-budget": "1GB", "--max-memory": "cpu=1GB", "--nproc": "2", "--timeout": "30",
    "--work-dir": "w", "--out": "r.html", "--json": "r.json", "--md": "r.md",
    "--factory": "mypkg.models:build", "--cache": "cold,warm",
    "--per-rank": "sharded", "--backend": "gloo",
}


def _argv() -> list[str]:
    return [x for flag, value in EXAMPLE_ARGV.items() for x in (flag, value)]


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text)) - {"--help"}


def test_spec_defaults_are_the_defaults_of_the_sweep_signature() -> None:
    # GIVEN the signature of bigviz.sweep
    params = inspect.signature(sweep).parameters
    # THEN every option of the spec is one of its keywords, with the same default
    for opt in SWEEP_OPTIONS:
        assert opt.name in params, opt.name
        assert opt.default == params[opt.name].default, opt.name
    # AND every keyword is in the spec, or deliberately not offered by the front ends
    assert set(params) - {"model"} == {o.name for o in SWEEP_OPTIONS} - {"model"} | API_ONLY


def test_front_ends_start_from_the_api_defaults_except_the_documented_ones() -> None:
    # the text a front end starts from parses to the API's default, unless the spec says
    # why not (and the exceptions are exactly those)
    def as_api(value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    differ = {o.name for o in SWEEP_OPTIONS if as_api(o.convert(o.text)) != o.default}
    assert differ == set(options.FRONT_END_DEFAULTS)


def test_namespace_becomes_checked_sweep_keywords() -> None:
    p = argparse.ArgumentParser()
    options.add_arguments(p)
    kw = options.from_namespace(p.parse_args([]))
    assert kw == {
        "model": "gpt:400MB", "strategies": ["naive", "sharded", "meta", "mmap"],
        "shard_sizes": ["200MB"], "device_maps": ["cpu"], "formats": ["safetensors"],
        "dtype": "float32", "ram_budget": None, "max_memory": None, "nproc": None,
        "timeout": None, "work_dir": None, "factory": None, "cache": ["as-is"],
        "per_rank": None, "backend": None,
    }
    # every keyword reaches bigviz.sweep by its own name
    assert set(kw) <= set(inspect.signature(sweep).parameters)
    # with --nproc, the default strategies are the distributed ones
    kw = options.from_namespace(p.parse_args(["--nproc", "2", "--max-memory", "cpu=1GB"]))
    assert kw["strategies"] == list(options.RANK_STRATEGIES) and kw["nproc"] == 2
    assert kw["max_memory"] == {"cpu": "1GB"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--strategies", " , "], "--strategies ' , ' is empty"),
        (["--shard-sizes", "10XB"], "10XB"),
        (["--ram-budget", "lots"], "lots"),
        (["--max-memory", "cpu2GB"], "cpu2GB"),
        (["--nproc", "0"], "--nproc 0 must be a number of ranks >= 1"),
        (["--timeout", "0"], "--timeout 0.0 must be a positive number of seconds"),
    ],
)
def test_bad_values_fail_before_anything_runs_naming_the_value(
    argv: list[str], needle: str
) -> None:
    p = argparse.ArgumentParser()
    options.add_arguments(p)
    with pytest.raises(ConfigError) as info:
        options.from_namespace(p.parse_args(argv))
    assert needle in str(info.value)


def test_cli_and_magic_accept_the_same_flags(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("IPython")
    from bigviz.cli import build_parser, main
    from bigviz.magics import parser

    spec = {o.flag for o in SWEEP_OPTIONS} | {"--out", "--json", "--md"}
    assert set(EXAMPLE_ARGV) == spec  # this test gives every flag a value
    # GIVEN the help of both front ends (what a user reads)
    assert main(["sweep", "--help"]) == 0
    cli_help = capsys.readouterr().out.split("examples:")[0]
    magic_help = parser("sweep").format_help().split("examples:")[0]
    # THEN both list exactly the spec's flags (and every CLI verb its --verbose)
    assert _flags(cli_help) == spec | {"--verbose"}
    assert _flags(magic_help) == spec
    # AND the same command line means the same sweep to both
    from_cli = options.from_namespace(build_parser().parse_args(["sweep", *_argv()]))
    from_magic = options.from_namespace(parser("sweep").parse_args(_argv()))
    assert from_cli == from_magic
    assert from_cli["shard_sizes"] == ["1MB", "2MB"] and from_cli["nproc"] == 2


def test_dashboard_and_dashboard_magic_start_from_the_spec() -> None:
    pytest.importorskip("ipywidgets")
    from bigviz import widgets
    from bigviz.units import parse_size

    # GIVEN a dashboard made with no arguments
    dash = widgets.Dashboard()
    # THEN its inputs hold the spec's notebook defaults and offer the spec's choices
    assert dash.model_w.value == options.NOTEBOOK_DEFAULTS["model"]
    assert dash.shard_size == parse_size(options.NOTEBOOK_DEFAULTS["shard_size"])
    assert tuple(dash.strategies_w.value) == options.default_strategies()
    assert tuple(dash.format_w.options) == options.FORMATS
    assert dash.format_w.value == options.FORMATS[0]
    assert set(options.device_map_choices()) - {"cuda", "cuda:0"} <= set(dash.device_map_w.options)
    assert widgets.DEVICE_MAPS == options.DEVICE_MAPS
    # AND `%bigviz dashboard` starts from the same model
    if importlib.util.find_spec("IPython") is not None:
        from bigviz.magics import parser

        assert parser("dashboard").parse_args([]).model == options.NOTEBOOK_DEFAULTS["model"]


def test_no_front_end_touches_argparse_privates() -> None:
    private = re.compile(r"\._(actions|subparsers|group_actions|option_string_actions|"
                         r"registries|defaults)\b")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "bigviz").rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert hits == []


def test_custom_device_map_json_is_checked() -> None:
    assert options.parse_device_map_json(' {"": "disk"} ') == {"": "disk"}
    with pytest.raises(ConfigError, match="not JSON"):
        options.parse_device_map_json("{not json")
    with pytest.raises(ConfigError, match="JSON object"):
        options.parse_device_map_json('["cpu"]')
