"""The dashboard's inputs and what they show before anything runs: the split plan under
the shard slider, the strategies greyed out with why, the custom map's module names, and
:meth:`DashboardForm.settings`, the checked keyword arguments of :func:`bigviz.sweep`.

The base of :class:`~bigviz.widgets._dashboard.Dashboard`, which adds the run, its
progress and results, Advise and the export buttons; the widgets themselves are built in
``_controls``. Apart so that neither module reads past ~500 lines.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigviz._errors import BigvizError, ConfigError
from bigviz.report import escape as _e
from bigviz.units import format_size
from bigviz.widgets._controls import CUSTOM, TEXT

if TYPE_CHECKING:
    from bigviz.checkpoint import ShardPlan
    from bigviz.progress import BackgroundSweep

__all__ = ["DashboardForm"]


class DashboardForm:
    """The inputs of a :class:`~bigviz.widgets._dashboard.Dashboard`: what they show
    live (no run) and the sweep settings they make. Made only as a Dashboard."""

    # the ipywidgets, made by build_controls (bigviz.widgets._controls)
    advice_w: Any
    advise_w: Any
    baseline_w: Any
    cancel_w: Any
    device_json_box: Any
    device_json_hint: Any
    device_json_w: Any
    device_map_w: Any
    export_w: Any
    format_w: Any
    links_w: Any
    live_w: Any
    max_memory_w: Any
    model_w: Any
    peaks_w: Any
    pick_w: Any
    progress_w: Any
    ram_budget_w: Any
    cache_w: Any
    results_w: Any
    run_w: Any
    shard_info: Any
    shard_w: Any
    status_w: Any
    strategies_hint: Any
    strategies_w: Any
    table_w: Any
    timeline_w: Any
    timelines_box: Any
    timelines_w: Any
    widget: Any

    # the state the form reads, set by Dashboard.__init__
    work_dir: str | Path | None
    _job: BackgroundSweep | None
    _modules: dict[str, Any]
    _plan: ShardPlan | None
    _plan_error: str | None
    _expected_phases: int

    @property
    def running(self) -> bool:
        """True while a sweep runs in the background."""
        return self._job is not None and self._job.running

    # -- the split plan (live, no run) ---------------------------------------------------
    @property
    def shard_size(self) -> int:
        """The slider's max shard size in bytes, rounded to 3 significant digits."""
        return int(float(f"{self.shard_w.value:.3g}"))

    @property
    def plan(self) -> ShardPlan | None:
        """How the model splits at :attr:`shard_size` (``None`` when the spec is bad)."""
        return self._plan

    @property
    def plan_error(self) -> str | None:
        """Why there is no plan (a bad model spec), else ``None``."""
        return self._plan_error

    def _model_changed(self) -> None:
        from bigviz.models import build_model

        spec = self.model_w.value.strip()
        try:
            if spec not in self._modules:
                # meta device: shapes only, no memory; ties are seen by identity (a
                # checkpoint folder in its own dtype: dtype=None)
                self._modules[spec] = build_model(spec, dtype=None, device="meta")
        except Exception as exc:  # a user's factory may raise anything: show it
            self._plan, self._plan_error = None, f"{spec}: {exc}"
            self.shard_info.value = f'<span style="color:{TEXT["error"]}">{_e(exc)}</span>'
            self.run_w.disabled = True
            self._update_guidance()
            return
        from bigviz.checkpoint import inspect_checkpoint, plan_shards
        from bigviz.models import parse_spec

        parsed = parse_spec(spec, None)
        # a checkpoint folder (or hf: id) runs on its files as saved: no slider
        self.shard_w.disabled = parsed.kind == "folder"
        if parsed.kind == "folder":
            from bigviz.runner.checkpoints import as_saved_text

            info = inspect_checkpoint(parsed.path or "")
            self._plan, self._plan_error = plan_shards(self._modules[spec], 2**62), None
            self._expected_phases = 3 + info.n_shards
            self.shard_info.value = (
                f'<span class="bigviz-shards" data-n="{info.n_shards}" data-as-saved="1">'
                f"<b>as saved</b> ({_e(as_saved_text(info))}), model "
                f"{_e(format_size(info.total_size, binary=False))}, {_e(info.format)}: "
                "loaded from its own files, never written to</span>")
            self.run_w.disabled = self.running
            self._update_guidance()
            return

        total = plan_shards(self._modules[spec], 2**62).total_size
        # from ~1/64 of the model (many shards) to past its size (a single file)
        lo = math.floor(math.log10(max(total / 64, 1e5)) * 10) / 10
        hi = math.ceil(math.log10(max(total * 2, 2e5)) * 10) / 10
        with self.shard_w.hold_trait_notifications():
            self.shard_w.max = max(hi, self.shard_w.min)
            self.shard_w.min = lo
            self.shard_w.max = hi
            self.shard_w.value = min(max(self.shard_w.value, 10**lo), 10**hi)
        self._update_plan()
        self._update_guidance()

    def _update_plan(self) -> None:
        from bigviz.checkpoint import plan_shards

        module = self._modules.get(self.model_w.value.strip())
        if module is None:
            return
        plan = plan_shards(module, self.shard_size)
        self._plan, self._plan_error = plan, None
        # naive-ish strategies load the largest shard on top; the count says how many files
        self._expected_phases = 3 + plan.n_shards
        # one unit system on the line: decimal, as the zoo's "gpt:200MB" and the slider
        size = format_size(self.shard_size, binary=False)
        largest = format_size(plan.largest_shard, binary=False)
        if largest == size and plan.largest_shard != self.shard_size:  # 3.98 vs 4.01 MB
            size = format_size(self.shard_size, binary=False, precision=2)
            largest = format_size(plan.largest_shard, binary=False, precision=2)
        over = ""
        if plan.largest_shard > self.shard_size:
            # a shard holds whole tensors: one bigger than the maximum is a shard of its own
            big = max(plan.shards, key=lambda sh: sh.bytes)
            state = module.state_dict(keep_vars=True)
            sizes = {k: state[k].numel() * state[k].element_size() for k in big.keys
                     if k in state}
            name = max(sizes, key=lambda k: sizes[k], default="")
            what = (f"tensor {name!r} alone is {format_size(sizes[name], binary=False)}"
                    if name else f"its tensors take {largest}")
            over = (f'<br><span class="bigviz-shard-over" style="color:{TEXT["warn"]}">'
                    f"the largest shard ({_e(largest)}) is above the {_e(size)} maximum: "
                    f"{_e(what)}, and a tensor is never split across shards</span>")
        self.shard_info.value = (
            f'<span class="bigviz-shards" data-n="{plan.n_shards}" data-size="{self.shard_size}" '
            f'data-largest="{plan.largest_shard}">'
            f"<b>{_e(size)}</b> → "
            f"<b>{plan.n_shards}</b> shard{'s' if plan.n_shards != 1 else ''}, largest "
            f"{_e(largest)} (model {_e(format_size(plan.total_size, binary=False))})"
            f"</span>{over}")
        self.run_w.disabled = self.running

    def _device_map_changed(self) -> None:
        custom = self.device_map_w.value == CUSTOM
        self.device_json_box.layout.display = "flex" if custom else "none"
        self._update_guidance()

    def _device_map_for_guidance(self) -> Any:
        value = self.device_map_w.value
        if value != CUSTOM:
            return value
        from bigviz import options

        try:
            return options.parse_device_map_json(self.device_json_w.value or "{}")
        except ConfigError:
            return {"": "?"}  # some custom map: what is not "cpu" rules the same strategies out

    def _update_guidance(self) -> None:
        """Grey out the strategies that cannot run with the chosen model, format and
        device map (tooltip and one line saying why), and list the model's module names
        for the custom map."""
        from bigviz.widgets._guidance import (
            group_reasons,
            map_placeholder,
            strategy_reasons,
            top_level_names,
        )

        device_map = self._device_map_for_guidance()
        reasons = strategy_reasons(list(self.strategies_w.options),
                                   model=self.model_w.value.strip(),
                                   format=self.format_w.value, device_map=device_map)
        self.strategies_w.set_reasons(reasons)
        lines = [f"<b>{_e(', '.join(which))}</b>: {_e(why)}"
                 for why, which in group_reasons(reasons)]
        auto = self.strategies_w._auto
        if auto:
            lines.append(f"picked <b>{_e(auto)}</b>, which fits")
        self.strategies_hint.value = (
            f'<div style="color:{TEXT["muted"]};font-size:90%">greyed out: '
            + "<br>".join(lines) + "</div>") if lines else ""
        module = self._modules.get(self.model_w.value.strip())
        if module is None:
            self.device_json_hint.value = ""
            return
        self.device_json_w.placeholder = map_placeholder(module)
        names = []
        for top in top_level_names(module):
            sub = getattr(module, top, None)
            kids = [n for n, _ in sub.named_children()] if sub is not None and hasattr(
                sub, "named_children") else []
            names.append(f"<code>{_e(top)}</code>" + (
                f" ({_e(', '.join(f'{top}.{k}' for k in kids[:6]))}"
                f"{', …' if len(kids) > 6 else ''})" if kids else ""))
        self.device_json_hint.value = (
            f'<div style="color:{TEXT["muted"]};font-size:90%">module names of this model: '
            + "; ".join(names) + ' — map each (or <code>""</code>: the rest) to "cpu", '
            '"disk" or "cuda:N"</div>')

    # -- settings -------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The keyword arguments :func:`bigviz.sweep` will get, checked.

        Raises:
            ConfigError: a bad model spec, empty strategy list, unreadable custom JSON,
                ``max_memory`` or RAM budget (the message names the value).
        """
        from bigviz.models import parse_spec

        model = self.model_w.value.strip()
        folder = parse_spec(model).kind == "folder"  # its files as saved: no shard size
        strategies = list(self.strategies_w.value)
        if not strategies:
            raise ConfigError("no strategy selected; pick one or more, e.g. naive and meta")
        device_map: Any = self.device_map_w.value
        if device_map == CUSTOM:
            device_map = self._custom_map()
        else:
            from bigviz.strategies import validate_device_map

            try:  # a GPU this machine lacks is refused here, before any worker starts
                validate_device_map(device_map)
            except BigvizError as exc:
                raise ConfigError(f"device map: {exc}") from exc
        from bigviz.widgets._guidance import strategy_reasons

        for why in strategy_reasons(strategies, model=model, format=self.format_w.value,
                                    device_map=device_map).values():
            if why:
                raise ConfigError(f"strategies: {why}")
        # blank boxes are "none"; what is typed is checked as the command line checks it,
        # and an error names the box it came from
        budget = self._field("RAM budget", "ram_budget", self.ram_budget_w.value)
        caps = self._field("max_memory", "max_memory", self.max_memory_w.value)
        return {
            "model": model, "strategies": strategies,
            "shard_sizes": None if folder else [self.shard_size],
            "device_maps": [device_map], "formats": [self.format_w.value], "max_memory": caps,
            "ram_budget": budget, "work_dir": self.work_dir, "cache": [self.cache_w.value],
        }

    def _field(self, label: str, name: str, text: str) -> Any:
        from bigviz import options

        try:
            return options.option(name).convert(text.strip() or None)
        except BigvizError as exc:
            raise ConfigError(f"{label}: {exc}") from exc

    def _custom_map(self) -> dict[str, Any]:
        """The custom JSON map, checked against the model's meta skeleton."""
        from bigviz import options
        from bigviz.widgets._guidance import check_custom_map

        device_map = options.parse_device_map_json(self.device_json_w.value)
        module = self._modules.get(self.model_w.value.strip())
        if module is None:
            raise ConfigError(f"custom device map: fix the model first ({self._plan_error})")
        return check_custom_map(device_map, module)
