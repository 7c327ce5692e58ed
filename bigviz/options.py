"""The options of a sweep, described once for every front end.

Each :class:`Option` is one keyword of :func:`bigviz.runner.sweep` with its command-line
flag, help, the choices a front end offers, the default :func:`~bigviz.runner.sweep`
itself uses, and the text a front end starts from. ``bigviz sweep``, ``%bigviz sweep``
and the dashboard build their inputs from :data:`SWEEP_OPTIONS`, so the Python API and
the front ends cannot drift apart (a test compares these defaults with ``sweep``'s
signature).

Two front-end defaults differ from the API on purpose, and :data:`FRONT_END_DEFAULTS`
names them: a command line needs a model (the API takes it as an argument), and
``bigviz sweep`` cuts that model into 200 MB shards so that the sharded strategies have
more than one file to load. Without ``--strategies`` a front end runs
:func:`default_strategies` (the distributed ones with ``--nproc``).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> kw = from_namespace(p.parse_args(["--strategies", "naive,meta"]))
    >>> kw["model"], kw["strategies"], kw["shard_sizes"]
    ('gpt:400MB', ['naive', 'meta'], ['200MB'])
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bigviz._errors import ConfigError
from bigviz.units import parse_max_memory, parse_size

__all__ = [
    "AS_SAVED",
    "BACKENDS",
    "CACHES",
    "DEFAULT_REPORT",
    "DEVICE_MAPS",
    "DTYPES",
    "FORMATS",
    "FRONT_END_DEFAULTS",
    "MODEL_DEPENDENT",
    "NOTEBOOK_DEFAULTS",
    "PER_RANK",
    "RANKS_PER_CORE",
    "RANK_STRATEGIES",
    "REQUIRED",
    "STRATEGIES",
    "SWEEP_OPTIONS",
    "Option",
    "add_arguments",
    "check_nproc",
    "cpu_cores",
    "default_strategies",
    "device_map_choices",
    "from_namespace",
    "is_as_saved",
    "nproc_note",
    "option",
    "parse_device_map_json",
    "parse_list",
    "positive_size",
]

#: The default of an option :func:`bigviz.runner.sweep` requires (it has none).
REQUIRED: Final[Any] = inspect.Parameter.empty

#: Checkpoint formats a sweep can save and load.
FORMATS: Final[tuple[str, ...]] = ("safetensors", "bin")
#: The page-cache states a run can start from (``--cache``; bigviz.runner.pagecache).
CACHES: Final[tuple[str, ...]] = ("as-is", "cold", "warm")
#: Parameter dtypes a model can be built in.
DTYPES: Final[tuple[str, ...]] = ("float32", "bfloat16", "float16")
#: Named device maps the front ends offer (``cuda:N`` and, in Python, dicts work too).
DEVICE_MAPS: Final[tuple[str, ...]] = (
    "cpu", "cuda", "cuda:0", "auto", "balanced", "sequential", "disk",
)
#: Strategies a front end runs when none are named.
STRATEGIES: Final[tuple[str, ...]] = ("naive", "sharded", "meta", "mmap")
#: ... and with ``--nproc`` (distributed strategies).
RANK_STRATEGIES: Final[tuple[str, ...]] = ("every-rank-loads", "rank0-broadcast", "shared-mmap")
#: What each rank of ``every-rank-loads`` may run (``--per-rank``; bigviz.strategies.ranks).
PER_RANK: Final[tuple[str, ...]] = ("naive", "sharded", "meta")
#: ``torch.distributed`` backends the ranks may use (``--backend``).
BACKENDS: Final[tuple[str, ...]] = ("gloo", "nccl")
#: The report ``bigviz sweep`` writes when ``--out`` is not given.
DEFAULT_REPORT: Final = "bigviz-sweep.html"
#: The shard size of a checkpoint folder's files as they are (``--shard-sizes as-saved``).
AS_SAVED: Final = "as saved"


def is_as_saved(text: str) -> bool:
    """Whether a typed shard size means "the files as saved" (``as saved``, ``as-saved``).

    Example:
        >>> is_as_saved("as-saved"), is_as_saved("200MB")
        (True, False)
    """
    return text.strip().lower().replace("-", " ").replace("_", " ") == AS_SAVED


def parse_list(text: str, flag: str) -> list[str]:
    """A comma-separated list; empty items are dropped, an empty list is an error.

    Raises:
        ConfigError: nothing but commas and spaces, naming ``flag``.

    Example:
        >>> parse_list("naive, meta,", "--strategies")
        ['naive', 'meta']
    """
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{flag} {text!r} is empty; give a comma-separated list")
    return items


def positive_size(text: str, flag: str) -> int:
    """A size typed for ``flag`` in bytes; zero and negative sizes are refused.

    Raises:
        ConfigError: naming the flag and the value ("must be positive").

    Example:
        >>> positive_size("200MB", "--shard-sizes")
        200000000
    """
    stripped = str(text).strip()
    if stripped.startswith("-") or (stripped[:1].isdigit() and parse_size(stripped) == 0):
        raise ConfigError(f"{flag} {text!r} must be positive, e.g. {flag} 200MB")
    return parse_size(stripped)


def _size_list(text: str, flag: str) -> list[str]:
    items = parse_list(text, flag)
    for size in items:
        if not is_as_saved(size):
            positive_size(size, flag)  # a clear error now, not half-way through a sweep
    return [AS_SAVED if is_as_saved(x) else x for x in items]


def _size_text(text: str, flag: str) -> str:
    positive_size(text, flag)
    return text  # as typed: the sweep records the budget the way the user wrote it


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


#: Ranks per CPU core above which ``nproc`` is refused: each rank is a Python process
#: holding torch (~300 MB before it loads anything) and they would only wait for each other.
RANKS_PER_CORE: Final = 4


def check_nproc(nproc: int, flag: str = "nproc") -> int:
    """Refuse a rank count far above this machine's CPU cores (more than
    :data:`RANKS_PER_CORE` per core), e.g. ``--nproc 1000`` on a laptop.

    Raises:
        ConfigError: naming the count, the cores and the most that runs.

    Example:
        >>> check_nproc(1)
        1
    """
    cores = cpu_cores()
    most = RANKS_PER_CORE * cores
    if nproc > most:
        raise ConfigError(
            f"{flag} {nproc} is far above the {cores} CPU core(s) here: each rank is a "
            "Python process with torch (~300 MB before it loads anything), and so many "
            f"would only wait for each other; use at most {most} ({flag} {cores} gives "
            "each rank a core of its own)")
    return nproc


def nproc_note(nproc: int | None) -> str | None:
    """What to tell a user who runs more ranks than there are CPU cores (``None``: fine).

    Example:
        >>> nproc_note(1) is None
        True
    """
    cores = cpu_cores()
    if nproc is None or nproc <= cores:
        return None
    return (f"note: --nproc {nproc} runs {nproc} ranks on {cores} CPU core(s): they take "
            "turns, so times stretch; each rank's memory is still measured as it is")


def _cache_list(text: str, flag: str) -> list[str]:
    items = [x.lower() for x in parse_list(text, flag)]
    for c in items:
        if c not in CACHES:
            raise ConfigError(f"{flag} {c!r} is not a page-cache state; use cold, warm or "
                              f"as-is, e.g. {flag} cold,warm")
    return items


def _max_memory(text: str, flag: str) -> dict[int | str, str] | None:
    del flag
    return parse_max_memory(text)


def _positive_ranks(nproc: int, flag: str) -> int:
    if nproc < 1:
        raise ConfigError(f"{flag} {nproc} must be a number of ranks >= 1, e.g. {flag} 2")
    return check_nproc(nproc, flag)


def _per_rank(name: str, flag: str) -> str:
    if name not in PER_RANK:
        raise ConfigError(f"{flag} {name!r} is not a per-rank strategy; use one of "
                          f"{', '.join(PER_RANK)}, e.g. {flag} sharded")
    return name


def _backend(name: str, flag: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"{flag} {name!r} is not a supported backend; use one of "
                          f"{', '.join(BACKENDS)}, e.g. {flag} gloo")
    return name


def _positive_seconds(seconds: float, flag: str) -> float:
    if not seconds > 0:
        raise ConfigError(f"{flag} {seconds} must be a positive number of seconds")
    return seconds


def parse_device_map_json(text: str) -> dict[str, Any]:
    """A custom device map typed as JSON: an object of module name → device.

    Raises:
        ConfigError: not JSON, or JSON that is not an object.

    Example:
        >>> parse_device_map_json('{"embed": "cpu", "blocks": "disk"}')
        {'embed': 'cpu', 'blocks': 'disk'}
    """
    text = text.strip()
    try:
        device_map = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"custom device map {text[:60]!r} is not JSON ({exc.msg}); write e.g. "
            '{"embed": "cpu", "blocks": "disk"}') from exc
    if not isinstance(device_map, dict):
        raise ConfigError(
            f"custom device map must be a JSON object of module → device, got {text!r}")
    return device_map


@dataclass(frozen=True)
class Option:
    """One option of a sweep: how front ends ask for it and what the API does without it.

    Attributes:
        name: the keyword of :func:`bigviz.runner.sweep` (and the argparse ``dest``).
        flag: the command-line flag, ``--shard-sizes``.
        help: one line for ``--help`` and ``%bigviz?``.
        metavar: the value's name in the usage line.
        default: what :func:`~bigviz.runner.sweep` uses when the keyword is left out
            (:data:`REQUIRED` when it has no default).
        text: the value a front end starts from, as typed (``None``: left out).
        type: argparse's converter of the typed text (``int``, ``float``), if any.
        parse: checks argparse's value and turns it into the keyword's value; its
            errors name ``flag``. ``None``: the value is used as it is.
        choices: the values a front end offers (for device maps, the named ones).

    Example:
        >>> option("shard_sizes").convert("100MB,2GB")
        ['100MB', '2GB']
    """

    name: str
    flag: str
    help: str
    metavar: str
    default: Any = None
    text: str | None = None
    type: Callable[[str], Any] | None = None
    parse: Callable[[Any, str], Any] | None = None
    choices: tuple[str, ...] = ()

    def convert(self, value: Any) -> Any:
        """The keyword's value for what the user typed (``None`` stays ``None``)."""
        if value is None or self.parse is None:
            return value
        return self.parse(value, self.flag)


#: Every option of ``bigviz sweep`` / ``%bigviz sweep`` that reaches :func:`bigviz.sweep`,
#: in the order ``--help`` lists them.
SWEEP_OPTIONS: Final[tuple[Option, ...]] = (
    Option("model", "--model", metavar="SPEC", default=REQUIRED, text="gpt:400MB",
           help="gpt:SIZE, mlp:SIZE, bert-base, package.module:function, a checkpoint folder "
           "(./my-model: loaded as saved, never written to) or hf:ORG/NAME[@REVISION] from "
           "the local Hugging Face cache (default: gpt:400MB)"),
    Option("strategies", "--strategies", metavar="LIST", default=REQUIRED, parse=parse_list,
           help="comma-separated strategy names (default: " + ",".join(STRATEGIES)
           + "; with --nproc: " + ",".join(RANK_STRATEGIES) + ")"),
    Option("shard_sizes", "--shard-sizes", metavar="LIST", default=None, text="200MB",
           parse=_size_list,
           help="comma-separated max shard sizes, e.g. 100MB,500MB,2GB (default: 200MB; "
           "a checkpoint folder: as-saved, and a size reshards it into the work folder)"),
    Option("device_maps", "--device-map", metavar="LIST", default=("cpu",), text="cpu",
           parse=parse_list, choices=DEVICE_MAPS,
           help="comma-separated device maps: cpu, cuda, cuda:N, auto, balanced, "
           "sequential, disk"),
    Option("formats", "--format", metavar="LIST", default=("safetensors",), text="safetensors",
           parse=parse_list, choices=FORMATS,
           help="comma-separated checkpoint formats: safetensors, bin (default: safetensors)"),
    Option("dtype", "--dtype", metavar="DTYPE", default=None, text="float32",
           choices=DTYPES,
           help="parameter dtype of the model: float32, bfloat16, float16 (default: float32; "
           "a checkpoint folder loads in its own dtype)"),
    Option("cache", "--cache", metavar="LIST", default=("as-is",), text="as-is",
           parse=_cache_list, choices=CACHES,
           help="page cache of the checkpoint's files when each load starts: cold (dropped "
           "first), warm (read in first), as-is (as earlier runs left it; the default); "
           "a list runs each strategy once per state, e.g. cold,warm. Every run reports "
           "the state it got and the GB/s it read from storage"),
    Option("ram_budget", "--ram-budget", metavar="SIZE", parse=_size_text,
           help="kill a run whose RSS exceeds this (e.g. 8GB): the worker's whole RSS, "
           "its baseline included, checked at every sample; it is reported as "
           "budget_exceeded"),
    Option("max_memory", "--max-memory", metavar="MAP", parse=_max_memory,
           help="per-device caps for dispatch, e.g. cpu=2GB,0=10GB"),
    Option("nproc", "--nproc", metavar="N", type=int, parse=_positive_ranks,
           help="run distributed strategies (every-rank-loads, rank0-broadcast, shared-mmap) "
           "on N torch.distributed ranks"),
    Option("per_rank", "--per-rank", metavar="NAME", parse=_per_rank, choices=PER_RANK,
           help="what each rank of every-rank-loads runs: naive (2 x M, the textbook "
           "problem), sharded or meta (with --nproc; default: naive)"),
    Option("backend", "--backend", metavar="NAME", parse=_backend, choices=BACKENDS,
           help="torch.distributed backend of the ranks: gloo or nccl (with --nproc; "
           "default: nccl when every rank has a GPU, else gloo)"),
    Option("timeout", "--timeout", metavar="SECONDS", type=float, parse=_positive_seconds,
           help="stop a run (or a distributed job) that takes longer than this; outcome error"),
    Option("work_dir", "--work-dir", metavar="DIR",
           help="where checkpoints, a folder's checksums and reshards are written"),
    Option("factory", "--factory", metavar="MODULE:FUNCTION",
           help="for a checkpoint folder without config.json: package.module:function that "
           "returns its nn.Module (imported and called: it runs your code)"),
)

#: Options whose front-end starting value is not :func:`bigviz.sweep`'s default, and why.
FRONT_END_DEFAULTS: Final[Mapping[str, str]] = {
    "model": "the API takes the model as an argument; a command line needs one",
    "strategies": "the API requires them; front ends run default_strategies(nproc)",
    "shard_sizes": "200 MB shards give the default 400 MB model more than one file",
    "dtype": "the API's None is float32 for the zoo and a checkpoint folder's own dtype",
}

#: Options whose front-end value depends on the model: a checkpoint folder is loaded as
#: saved (its own shard sizes and dtype), a zoo model from the option's ``text``.
MODEL_DEPENDENT: Final[tuple[str, ...]] = ("shard_sizes", "dtype")

#: What the notebook front ends (dashboard, ``%bigviz dashboard``) start from: a smaller
#: model than the command line's, so that a first click takes seconds.
NOTEBOOK_DEFAULTS: Final[Mapping[str, str]] = {"model": "gpt:100MB", "shard_size": "20MB"}


def _is_folder(model: str) -> bool:
    from bigviz.models.folders import is_folder_spec  # torch-free

    return is_folder_spec(model.strip())


def option(name: str) -> Option:
    """The option for the sweep keyword ``name``.

    Raises:
        KeyError: no such option.

    Example:
        >>> option("formats").choices
        ('safetensors', 'bin')
    """
    for opt in SWEEP_OPTIONS:
        if opt.name == name:
            return opt
    raise KeyError(f"no sweep option {name!r}; options are {[o.name for o in SWEEP_OPTIONS]}")


def default_strategies(nproc: int | None = None) -> tuple[str, ...]:
    """The strategies a front end runs when none are named.

    Example:
        >>> default_strategies(), default_strategies(2)[0]
        (('naive', 'sharded', 'meta', 'mmap'), 'every-rank-loads')
    """
    return STRATEGIES if nproc is None else RANK_STRATEGIES


def device_map_choices() -> tuple[str, ...]:
    """The named device maps to offer on this machine: :data:`DEVICE_MAPS`, then ``cuda:1``…
    for each GPU beyond the first (``cuda:0`` is always offered; the runner checks it).

    Example:
        >>> device_map_choices()[:2]
        ('cpu', 'cuda')
    """
    import torch  # not at import: the command line's parser must not load it

    return (*DEVICE_MAPS, *(f"cuda:{i}" for i in range(1, torch.cuda.device_count())))


def add_arguments(
    parser: argparse.ArgumentParser, *, report: str | None = DEFAULT_REPORT
) -> None:
    """Add the sweep's options, and its report files, to ``parser``.

    Args:
        parser: a parser (or sub-parser) of a front end.
        report: the report written without ``--out`` (``None``: none, e.g. in a notebook
            where the figures are the output).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_arguments(p, report=None)
        >>> p.parse_args([]).out is None
        True
    """
    for opt in SWEEP_OPTIONS:
        # a model-dependent option left out stays None: from_namespace fills it in once
        # the model is known
        default = None if opt.name in MODEL_DEPENDENT else opt.text
        kwargs: dict[str, Any] = {"dest": opt.name, "default": default,
                                  "metavar": opt.metavar, "help": opt.help}
        if opt.type is not None:
            kwargs["type"] = opt.type
        parser.add_argument(opt.flag, **kwargs)
    out_help = ("also write a report, format by suffix (.html, .json, .md, .csv)"
                if report is None else f"report file, format by suffix (default: {report})")
    parser.add_argument("--out", default=report, metavar="FILE", help=out_help)
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write JSON ('-' = stdout)")
    parser.add_argument("--md", default=None, metavar="FILE", help="also write a Markdown summary")


def from_namespace(ns: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`bigviz.sweep` (``model`` included) for parsed flags.

    Every value is checked here, before anything runs: a bad size, an empty list, a
    non-positive ``--timeout`` or ``--nproc`` raise with the flag and the value named.

    Raises:
        ConfigError: a value a front end's user can fix.

    Example:
        >>> ns = argparse.Namespace(**{o.name: o.text for o in SWEEP_OPTIONS})
        >>> from_namespace(ns)["strategies"]
        ['naive', 'sharded', 'meta', 'mmap']
    """
    values = {opt.name: getattr(ns, opt.name, opt.text) for opt in SWEEP_OPTIONS}
    model = values["model"]
    folder = isinstance(model, str) and _is_folder(model)
    for name in MODEL_DEPENDENT:
        if values[name] is None and not folder:
            values[name] = option(name).text  # a folder keeps None: as saved, own dtype
    # --nproc first: the strategies' default depends on it
    first = ("timeout", "nproc")
    kwargs = {name: option(name).convert(values[name]) for name in first}
    if values["strategies"] is None:
        values["strategies"] = ",".join(default_strategies(kwargs["nproc"]))
    for opt in SWEEP_OPTIONS:
        if opt.name not in first:
            kwargs[opt.name] = opt.convert(values[opt.name])
    return kwargs
