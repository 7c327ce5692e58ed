"""The dashboard's guidance as plain logic (no ipywidgets, no browser): which strategies
fit a device map, which maps this machine offers, the module names of a meta skeleton,
and the check of a custom map before any worker starts."""

from __future__ import annotations

import json

import pytest

from bigviz._errors import ConfigError
from bigviz.models import build_model
from bigviz.widgets._guidance import (
    check_custom_map,
    group_reasons,
    map_placeholder,
    module_names,
    offered_device_maps,
    strategy_reasons,
    top_level_names,
)

DEFAULTS = ["naive", "sharded", "meta", "mmap"]


@pytest.fixture(scope="module")
def gpt() -> object:
    # shapes only: the meta device allocates nothing
    return build_model("gpt:20MB", device="meta")


def test_disk_rules_out_the_cpu_only_strategies_with_one_sentence() -> None:
    # GIVEN the default strategies and dispatch, WHEN the device map is "disk"
    reasons = strategy_reasons([*DEFAULTS, "dispatch"], model="gpt:20MB",
                               format="safetensors", device_map="disk")
    # THEN each default one has a reason and dispatch none
    assert all(reasons[n] and "CPU RAM only" in str(reasons[n]) for n in DEFAULTS)
    assert reasons["dispatch"] is None
    # AND the four reasons read as one sentence naming the four strategies
    grouped = group_reasons(reasons)
    assert len(grouped) == 1
    text, which = grouped[0]
    assert which == DEFAULTS and "naive" not in text and "'disk'" in text


def test_cpu_map_leaves_the_defaults_runnable_and_formats_still_count() -> None:
    assert set(strategy_reasons(DEFAULTS, model="gpt:20MB", format="safetensors",
                                device_map="cpu").values()) == {None}
    # a strategy's own model rule comes through too (transformers runs gpt and folders)
    why = strategy_reasons(["transformers"], model="mlp:10MB", format="safetensors",
                           device_map="cpu")["transformers"]
    assert why is not None and ("mlp:10MB" in why or "pip install" in why)


def test_cuda_is_offered_only_with_a_gpu() -> None:
    without = offered_device_maps(0)
    assert "cpu" in without and "disk" in without
    assert not [m for m in without if m.startswith("cuda")]
    assert {"cuda", "cuda:0"} <= set(offered_device_maps(1))


def test_module_names_come_from_the_meta_skeleton(gpt: object) -> None:
    assert top_level_names(gpt) == ["transformer", "lm_head"]  # type: ignore[arg-type]
    names = module_names(gpt)  # type: ignore[arg-type]
    assert {"transformer.wte", "transformer.h.0", "lm_head.weight"} <= set(names)
    assert "embed" not in names and "blocks" not in names
    example = json.loads(map_placeholder(gpt))  # type: ignore[arg-type]
    assert set(example) == {"transformer", "lm_head"}
    check_custom_map(example, gpt)  # type: ignore[arg-type]  # the example is valid


def test_a_name_the_model_lacks_is_refused_listing_the_valid_ones(gpt: object) -> None:
    with pytest.raises(ConfigError) as err:
        check_custom_map({"encoder.layers": "cpu"}, gpt)  # type: ignore[arg-type]
    msg = str(err.value)
    assert msg.startswith("custom device map: 'encoder.layers' is not a module")
    assert "transformer, lm_head" in msg and "\n" not in msg
    # a near miss is suggested
    with pytest.raises(ConfigError, match="did you mean 'transformer'"):
        check_custom_map({"transfomer": "cpu"}, gpt)  # type: ignore[arg-type]


def test_weights_left_unplaced_or_bad_devices_are_refused(gpt: object) -> None:
    with pytest.raises(ConfigError, match=r"no device for .*under lm_head.*add 'lm_head'"):
        check_custom_map({"transformer": "cpu"}, gpt)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"custom device map: .*'gpu' is not a device"):
        check_custom_map({"": "gpu"}, gpt)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no CUDA device"):
        check_custom_map({"": 0}, gpt, n_cuda=0)  # type: ignore[arg-type]
    # the rest-of-the-model key and nested entries are fine; ints become cuda:N
    assert check_custom_map({"": "cpu", "transformer.h": "disk"}, gpt) == {  # type: ignore[arg-type]
        "": "cpu", "transformer.h": "disk"}
    assert check_custom_map({"": 0}, gpt, n_cuda=1) == {"": "cuda:0"}  # type: ignore[arg-type]
