"""Config dataclasses are the single declaration of every option: name, type, default, help text and bounds.

A job (generate, train, eval, ...) is one dataclass; shared parts (the env, the worker pool) are nested dataclasses.
`knob()` declares a field with its help and checks; `check_knobs()` applies the checks (called from each config's
`__post_init__`); the command line (`mobile_vla_sim.cli`), YAML config files and the `config` block of every results
file are all derived from these declarations, so a knob added to a dataclass appears everywhere at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Sequence

from mobile_vla_sim.errors import ConfigError

#: Metadata keys a knob may carry.
_HELP, _CHOICES, _MIN, _MAX, _CLI, _ARGUMENT, _FILE = "help", "choices", "min", "max", "cli", "argument", "file"
_SECRETS = "secrets"
#: Keys of `KEY=VALUE` items that hold a secret (token, api_key, hf_token, password...): never written anywhere.
SECRET_KEY = re.compile(r"(?i)(^|_)(token|key|apikey|password|passwd|secret|credentials?)$")
REDACTED = "<redacted>"
#: Largest YAML file read (config, deploy stack, probe suite, study spec): hand-written ones are a few KB.
MAX_YAML_BYTES = 2**20
#: Most nodes a YAML document may hold with every alias expanded where it is used: a "billion laughs" file of a few
#: hundred bytes expands to 10^9 nodes for whoever walks the result (checking, printing, hashing, writing results).
MAX_YAML_NODES = 100_000
#: YAML 1.2 reads `1e9` and `1e-4` as numbers; PyYAML (YAML 1.1) needs a dot and read them as strings.
_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def knob(default: Any = dataclasses.MISSING, help: str = "", *, choices: Sequence[str] | None = None,
         min: float | None = None, max: float | None = None, cli: bool = True, argument: bool = False,
         flag: str | None = None, nargs: int = 1, multiple: bool = False, file: bool = False,
         secrets: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field: its default, one-line help, and optional allowed choices or numeric bounds (inclusive).

    `cli=False` keeps a field out of the command line (it is still in YAML files and results); `argument=True` makes
    it a positional command-line argument; `flag` names its option when that differs from the field name; `nargs` > 1
    takes several values (a tuple); `multiple` lets the option repeat (a tuple of every value given). `file=True`
    marks a nested config that is one value rather than a group of options: the command line takes a YAML file for
    it (`--deploy stack.yaml`), a config file a mapping or a file path, and results record its content.
    `secrets=True` marks `KEY=VALUE` items whose secret-looking values (`SECRET_KEY`) `to_dict` redacts.
    """
    metadata = {_HELP: help, _CHOICES: tuple(choices) if choices else None, _MIN: min, _MAX: max, _CLI: cli,
                _ARGUMENT: argument, "flag": flag, "nargs": nargs, "multiple": multiple, _FILE: file,
                _SECRETS: secrets}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def option_name(name: str) -> str:
    """`image_size` -> `--image-size`: how errors name a knob, so the message matches what the user typed."""
    return "--" + name.replace("_", "-")


def check_knobs(cfg: Any, error: type[Exception] = ConfigError) -> None:
    """Check every field of `cfg` against its declared choices and bounds; NaN and inf are refused for floats."""
    for f in dataclasses.fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None or not meta:
            continue
        name = option_name(f.name)
        if meta.get(_CHOICES) and value not in meta[_CHOICES]:
            raise error(f"unknown {f.name.replace('_', ' ')} {value!r}: {name} must be one of "
                        f"{', '.join(map(str, meta[_CHOICES]))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{name} must be a finite number, got {value}")
        low, high = meta.get(_MIN), meta.get(_MAX)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low or high is not None and value > high:
                bounds = f">= {low:g}" if high is None else f"<= {high:g}" if low is None else f"in {low:g}..{high:g}"
                raise error(f"{name} must be {bounds}, got {value:g}")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass (its annotations are strings: `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for `X | None` / `Optional[X]`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_group(f: dataclasses.Field, tp: Any) -> bool:
    """Whether field `f` is a nested config whose knobs are options of their own (not a `file=True` value)."""
    return is_config(tp) and not (f.metadata or {}).get(_FILE)


def _own(f: dataclasses.Field, nested: bool) -> bool:
    """Whether a job sets field `f`: a nested config's `cli=False` knobs (the env's per-episode task and difficulty)
    belong to the job's own logic, not to its options."""
    return not nested or (f.metadata or {}).get(_CLI, True)


def flat_fields(cls: type, nested: bool = False) -> dict[str, tuple[type, dataclasses.Field, Any]]:
    """Every leaf knob of `cls` and its nested configs: name -> (owner class, field, type). Names must be unique."""
    out: dict[str, tuple[type, dataclasses.Field, Any]] = {}
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if not _own(f, nested):
            continue
        if is_group(f, tp):
            for name, leaf in flat_fields(tp, nested=True).items():
                if name in out:
                    raise TypeError(f"knob {name!r} is declared twice in {cls.__name__}")
                out[name] = leaf
        else:
            if f.name in out:
                raise TypeError(f"knob {f.name!r} is declared twice in {cls.__name__}")
            out[f.name] = (cls, f, tp)
    return out


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """A YAML/CLI value converted to the field's type (paths, tuples from lists or comma strings, ints, floats)."""
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{option_name(name)} cannot be empty")
    origin = typing.get_origin(inner)
    if is_config(inner):
        return coerce_config(value, inner, name)
    try:
        if origin is tuple:
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
            args = typing.get_args(inner)
            item_type = args[0] if args else str
            return tuple(_coerce(v, item_type, name) for v in items)
        if inner is Path:
            return Path(value)
        if inner is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if inner is int:
            if isinstance(value, str) and _FLOAT_WITHOUT_DOT.match(value.strip()):
                value = float(value)  # "1e9", as YAML 1.2 and Python's float() read it
            if isinstance(value, float) and not value.is_integer() or isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if inner is float:
            return float(value)
        if inner is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option_name(name)} expects {getattr(inner, '__name__', inner)}, got {value!r}") from None
    return value


def coerce_config(value: Any, cls: type, name: str) -> Any:
    """A `file=True` knob's value: the config itself, a mapping of its knobs, or the path of a YAML file of them."""
    if isinstance(value, cls):
        return value
    option = option_name(name)
    if isinstance(value, dict):
        values = flatten(value, cls)
    elif isinstance(value, (str, Path)):
        values = flatten(read_yaml(value, option, "pass an existing YAML file"), cls)
    else:
        raise ConfigError(f"{option} expects a YAML file or a mapping of options, got {value!r}")
    try:
        return build(cls, values)
    except ConfigError as err:
        raise ConfigError(f"{option} {value}: {err}" if isinstance(value, (str, Path)) else f"{option}: {err}") \
            from None


def build(cls: type, values: dict[str, Any], nested: bool = False) -> Any:
    """Instantiate config `cls` from flat knob values (nested configs built from their own knobs)."""
    hints = field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if not _own(f, nested):
            continue
        if is_group(f, tp):
            kwargs[f.name] = build(tp, values, nested=True)
        elif f.name in values:
            kwargs[f.name] = _coerce(values[f.name], tp, f.name)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required knob without value
        raise ConfigError(f"{cls.__name__}: {err}") from None


def flatten(data: dict[str, Any], cls: type, nested: bool = False) -> dict[str, Any]:
    """A config mapping, nested (`env: {drive: omni}`) or flat (`drive: omni`), as flat knob values; unknown keys are
    refused with the list of valid ones."""
    valid = flat_fields(cls, nested)
    hints = field_types(cls)
    children = {f.name: hints[f.name] for f in dataclasses.fields(cls) if is_group(f, hints[f.name])}
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key in children and isinstance(value, dict):
            out.update(flatten(value, children[key], nested=True))
        elif key in valid:
            out[key] = value
        else:
            raise ConfigError(f"unknown option {key!r} in the config file; valid options: {', '.join(sorted(valid))}")
    return out


def _expanded_size(node: Any, memo: dict[int, int | None], limit: int) -> int:
    """Nodes of a composed YAML document with every alias expanded (more than `limit`: stops counting); linear in
    the document's size however often its aliases nest, infinite for a recursive alias."""
    key = id(node)
    if key in memo:
        size = memo[key]
        return limit + 1 if size is None else size  # None: still being counted, i.e. the node contains itself
    memo[key] = None
    if isinstance(node.value, list):
        children = [n for item in node.value for n in (item if isinstance(item, tuple) else (item,))]
    else:
        children = []
    size = 1
    for child in children:
        size += _expanded_size(child, memo, limit)
        if size > limit:
            break
    memo[key] = size
    return size


def safe_yaml(text: str, where: str) -> Any:
    """Plain data of a YAML document (`yaml.safe_load`'s types), refusing with a one-line `ConfigError` a document
    that expands to more than `MAX_YAML_NODES` nodes (alias bombs, recursive aliases) or nests too deeply; numbers
    in exponent notation without a dot (`1e9`) are read as numbers, as YAML 1.2 reads them."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789"))
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"{where} expands to more than {MAX_YAML_NODES:,} values through its aliases (*name); "
                              "write the values out instead of nesting aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a config; flatten it") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path, what: str, missing_hint: str, mapping: bool = True) -> Any:
    """The content of YAML file `path` (a mapping unless `mapping` is False), or a one-line `ConfigError` naming
    `what` the file is (e.g. "config file") for a missing or oversized file, bad YAML (`safe_yaml`'s limits
    included) or, with `mapping`, another top level."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; {missing_hint}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is {path.stat().st_size:,} bytes, more than a config file's "
                          f"{MAX_YAML_BYTES:,}; pass the right file")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), f"{what} {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(err).splitlines()[0]}); fix it") from None
    if mapping:
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{what} {path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Flat knob values from a YAML config file for job `cls`."""
    return flatten(read_yaml(path, "config file", "pass an existing YAML file to --config (print a valid one with "
                                                  "--print-config)"), cls)


def redact(item: str) -> str:
    """`KEY=VALUE` with the value replaced by `REDACTED` when KEY names a secret (`SECRET_KEY`)."""
    key, sep, _ = str(item).partition("=")
    return f"{key}={REDACTED}" if sep and SECRET_KEY.search(key.strip()) else item


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain JSON/YAML values (nested configs as mappings, paths as strings), secrets of
    `secrets=True` knobs redacted: what results files, reports and `--print-config` show."""
    def field_value(owner: Any, f: dataclasses.Field) -> Any:
        value = plain(getattr(owner, f.name))
        if (f.metadata or {}).get(_SECRETS) and isinstance(value, list):
            value = [redact(v) for v in value]
        return value

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: field_value(value, f) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value
    return plain(cfg)


def to_yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def parse_choices(value: str | Iterable[str], valid: Sequence[str], what: str,
                  error: type[Exception] = ConfigError) -> tuple[str, ...]:
    """Expand "all" (or "both") or a comma list into a tuple of valid names, or raise a one-line `error`."""
    items = [value] if isinstance(value, str) else list(value)
    every = "both" if len(valid) == 2 else "all"
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name in ("all", "both"):
                names.extend(valid)
            elif name in valid:
                names.append(name)
            else:
                raise error(f"unknown {what} {name!r}: choose one of {', '.join(valid)}, a comma list, or {every}")
    if not names:
        raise error(f"no {what} given: choose one of {', '.join(valid)}, a comma list, or {every}")
    return tuple(dict.fromkeys(names))
