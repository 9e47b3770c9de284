"""One config mechanism for the engine and the trainer: typed dataclasses, YAML, `--set key=value`.

A settings class is a dataclass whose fields carry their type (`typing.Literal` for a closed set of
choices) and their help text (`field(metadata={"help": ...})`). This module reads such a class from
YAML and from command-line overrides, type-checks every value before anything heavy starts, and says
what is wrong with the key and the source in the message::

    engine.yaml: temperature: expected a number, got 'hot'
    --set quantization: expected one of 8bit, 4bit, none, got '3bit'
    mine.yaml: unknown key 'learning_rte' (did you mean 'learning_rate'?)

Two sources, two readings of a value:
  - YAML values are already typed by YAML and must fit the field. Numbers written as strings are read
    (PyYAML reads `1e-4` as a string: YAML 1.1 wants `1.0e-4`), but a quoted string is never a bool:
    `guided: "no"` is an error, not a truthy string.
  - `--set key=value` values are text and are parsed by the field's type: bool from
    true/false/yes/no/on/off/1/0, int, float, `none`/`null` for an Optional, a Literal's choices,
    lists as `a,b` or `[a, b]`, dicts as `{k: v}`.

Named configs: `resolve_named("gpu", bundled)` finds a bundled YAML by name (engine/configs/gpu.yaml,
trainer/recipes/qwen2.5-0.5b-lora.yaml) or takes a path.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

C = TypeVar("C")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "~", "")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class _Invalid(Exception):
    """A value does not fit a type; the message says what was expected."""


# ---------------------------------------------------------------------------------------------------------
# Field introspection


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a settings dataclass."""
    hints = get_type_hints(cls, include_extras=False)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text (`metadata={"help": ...}`), empty where none is given."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def type_name(t: Any) -> str:
    """A reader's name for a type: `int`, `one of 8bit, 4bit, none`, `list of str`, `float or none`."""
    origin, args = get_origin(t), get_args(t)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if _is_union(t):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if args else "mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(t, getattr(t, "__name__", str(t)))


def _is_union(t: Any) -> bool:
    return get_origin(t) is Union or isinstance(t, types.UnionType)


def suggest(key: str, known: Iterable[str]) -> str:
    """` (did you mean 'max_tokens'?)` for a near miss, else ``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(where: str, key: str, known: Iterable[str]) -> ConfigError:
    known = list(known)
    return ConfigError(f"{where}: unknown key {key!r}{suggest(key, known)}; known keys: {', '.join(known)}")


# ---------------------------------------------------------------------------------------------------------
# Coercion


def coerce(t: Any, value: Any, *, from_text: bool) -> Any:
    """`value` as type `t`, or _Invalid. `from_text`: the value is command-line text (see module doc)."""
    if value is None:
        if t is Any or type(None) in get_args(t):
            return None
        raise _Invalid(f"expected {type_name(t)}, got nothing")
    if from_text and isinstance(value, str) and type(None) in get_args(t) and value.strip().lower() in _NONE:
        return None
    if t is Any:
        return value
    origin, args = get_origin(t), get_args(t)
    if _is_union(t):
        members = [a for a in args if a is not type(None)]
        # Try the stricter members first: `int | str` keeps 5 an int and "2GiB" a string.
        for m in sorted(members, key=lambda a: a is str):
            try:
                return coerce(m, value, from_text=from_text)
            except _Invalid:
                continue
        raise _Invalid(f"expected {type_name(t)}, got {value!r}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value.strip()):
                return choice
        raise _Invalid(f"expected one of {', '.join(str(a) for a in args)}, got {value!r}")
    if t is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            s = value.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
        if from_text and isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Invalid(f"expected true or false, got {value!r}")
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()) and float(value).is_integer():
            return int(float(value))
        raise _Invalid(f"expected an integer, got {value!r}")
    if t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and (_NUMBER.match(value.strip()) or value.strip().lower() in ("inf", "-inf")):
            return float(value)
        raise _Invalid(f"expected a number, got {value!r}")
    if t is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `model: 7` or `description: 2025`: text that YAML read as a number
        raise _Invalid(f"expected text, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str) and from_text:
            value = _text_list(value)
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected {type_name(t)}, got {value!r}")
        inner = args[0] if args else Any
        return [coerce(inner, v, from_text=from_text) for v in value]
    if origin is dict:
        if isinstance(value, str) and from_text:
            value = _text_yaml(value)
        if not isinstance(value, dict):
            raise _Invalid(f"expected {type_name(t)}, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(kt, k, from_text=True): coerce(vt, v, from_text=from_text) for k, v in value.items()}
    if isinstance(t, type) and isinstance(value, t):
        return value
    raise _Invalid(f"expected {type_name(t)}, got {value!r}")


def _text_yaml(text: str) -> Any:
    try:
        return load_yaml(text)
    except (yaml.YAMLError, DuplicateKey):
        raise _Invalid(f"cannot read {text!r}") from None


def _text_list(text: str) -> list[Any]:
    s = text.strip()
    if s.startswith("["):
        v = _text_yaml(s)
        return [str(x) if not isinstance(x, str) else x for x in v] if isinstance(v, list) else [v]
    return [p.strip() for p in s.split(",") if p.strip()]


def coerce_field(cls: type, key: str, value: Any, where: str, *, from_text: bool = False) -> Any:
    """One setting of `cls`, type-checked; errors read `WHERE: KEY: expected ..., got ...`."""
    fts = field_types(cls)
    if key not in fts:
        raise unknown_key_error(where, key, fts)
    try:
        return coerce(fts[key], value, from_text=from_text)
    except _Invalid as e:
        raise ConfigError(f"{where}: {key}: {e}") from None


def check_types(obj: Any, where: str = "config") -> None:
    """Raise ConfigError on the first field of a settings object whose value does not fit its type."""
    for key, t in field_types(type(obj)).items():
        try:
            coerce(t, getattr(obj, key), from_text=False)
        except _Invalid as e:
            raise ConfigError(f"{where}: {key}: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# Sources


class DuplicateKey(Exception):
    """A mapping gives the same key twice; `line` and `first` are 1-based."""

    def __init__(self, key: Any, line: int, first: int):
        self.key, self.line, self.first = key, line, first
        super().__init__(f"{line}: key {key!r} given twice (first on line {first})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently (YAML 1.2 says keys are unique), so `temperature: 0.2` further down
    a long settings file quietly overrode the first one (issue 19). Keys merged in with `<<:` may still be
    overridden: that is what a merge is for.
    """


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says so in its own words
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise DuplicateKey(key, line, first)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str | bytes) -> Any:
    """yaml.safe_load with duplicate keys refused (DuplicateKey); bytes may be UTF-8 or UTF-16 with a BOM."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML settings file (an empty file is an empty mapping); a key given twice is
    a ConfigError naming it and both lines."""
    p = Path(path)
    try:
        raw = load_yaml(p.read_bytes())  # bytes: PyYAML reads UTF-8 and, by its BOM, UTF-16
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    except DuplicateKey as e:
        raise ConfigError(f"{p}:{e.line}: key {e.key!r} is given twice (first on line {e.first}); "
                          "YAML would keep the last one silently: delete one") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a {what} is a mapping of key: value, got {type(raw).__name__}")
    return {str(k): v for k, v in raw.items()}


def values_from(cls: type, mapping: Mapping[str, Any], where: str, *, from_text: bool = False) -> dict[str, Any]:
    """Every key of `mapping` type-checked against `cls` (unknown keys refused with a suggestion)."""
    return {k: coerce_field(cls, k, v, where, from_text=from_text) for k, v in mapping.items()}


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """`--set key=value` strings -> {key: text}; the text is typed later, by the field it sets."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, _, text = item.partition("=")
        out[key.strip().replace("-", "_")] = text.strip()
    return out


def apply_overrides(cfg: C, overrides: Mapping[str, Any], where: str = "--set") -> C:
    """A copy of `cfg` with each key replaced, type-checked; None values are skipped (flag not given).

    Strings are read as command-line text (`"true"`, `"1e-4"`, `"a,b"`); other values must fit the type.
    """
    changes = {
        k: coerce_field(type(cfg), k, v, where, from_text=isinstance(v, str)) for k, v in overrides.items() if v is not None
    }
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


# ---------------------------------------------------------------------------------------------------------
# Named configs


def bundled_configs(folder: str | os.PathLike) -> dict[str, Path]:
    """name -> file of every *.yaml in a bundled folder (engine/configs, trainer/recipes)."""
    return {p.stem: p for p in sorted(Path(folder).glob("*.yaml"))}


def resolve_named(name_or_path: str | os.PathLike, bundled: Mapping[str, Path], what: str = "config") -> Path:
    """A YAML path, or the name of a bundled one (`gpu`, `qwen2.5-0.5b-lora`; `.yaml` optional)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    stem = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    if stem in bundled and p.parent == Path("."):
        return bundled[stem]
    raise ConfigError(
        f"{what} {str(name_or_path)!r}: no such file, and not one of the bundled {what}s: {', '.join(bundled)}"
        + suggest(stem, bundled)
    )


# ---------------------------------------------------------------------------------------------------------
# Output


def to_yaml(cfg: Any) -> str:
    """The settings as YAML, in field order."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)


def describe(cls: type) -> str:
    """One line per key: name, type, default and help (for `engine config --keys`, `trainer config --keys`)."""
    lines = []
    defaults = cls()
    helps = field_help(cls)
    for key, t in field_types(cls).items():
        default = getattr(defaults, key)
        lines.append(f"{key}: {type_name(t)} (default {default!r})")
        if helps[key]:
            lines.append(f"    {helps[key]}")
    return "\n".join(lines)


def h(text: str, *, flag: bool | str | None = None, commands: tuple[str, ...] | None = None,
      **kw: Any) -> Any:
    """`field(metadata={"help": text, ...}, **kw)`, shorter to write in a settings class.

    Extra keywords that are not `dataclasses.field` arguments go into the metadata, where the settings
    class reads them (the engine's `group`, `vllm`, `engine_level`: engine/config.py). Two are read here:
      flag      the field's command-line option (`field_options`): True for `--the-field-name` (a bool gets
                `--x/--no-x`), or the declaration itself: `"--kv-cache"`, `"--enforce-eager/--compile"`,
                `"--include-base"` (a bool with one name is a plain flag); None: `--set key=value` only.
      commands  the commands that show the flag (None: every command that asks for the class's options);
      metavar   the flag's value name in --help;
      path      for a file or folder: click.Path's checks, e.g. {"exists": True, "file_okay": False}.
    """
    field_args = {k: kw.pop(k) for k in ("default", "default_factory", "init", "repr", "compare") if k in kw}
    meta = {"help": text, **kw}
    if flag is not None:
        meta["flag"] = flag
    if commands is not None:
        meta["commands"] = commands
    return dataclasses.field(metadata=meta, **field_args)


def field_options(cls: type, command: str | None = None) -> list[Any]:
    """click options for the fields of `cls` that declare a `flag` (see `h`), in field order.

    Each option's value lands under the field's name, None when the flag is not given, so that
    `apply_overrides` layers it over YAML and `--set` exactly like `--set key=value` would: the type, the
    choices and the help come from the field, and a setting gains its flag by one word in its declaration.
    """
    import click

    options = []
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("flag")
        commands = f.metadata.get("commands")
        if not spec or (command is not None and commands is not None and command not in commands):
            continue
        t = types_[f.name]
        inner = [a for a in get_args(t) if a is not type(None)] if _is_union(t) else [t]
        base = inner[0] if len(inner) == 1 else str
        decl = f"--{f.name.replace('_', '-')}" if spec is True else str(spec)
        if base is bool and spec is True:
            decl = f"{decl}/--no-{decl[2:]}"
        text = str(f.metadata.get("help") or "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is not None:  # None's meaning is in the help ("none: ...")
            text += f" Default: {('on' if default else 'off') if isinstance(default, bool) else default}."
        kw: dict[str, Any] = {"default": None, "help": text.strip() or None}
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        if f.metadata.get("path") is not None:  # a file or folder: click checks it (exists, file_okay, ...)
            kw["type"] = click.Path(**f.metadata["path"])
        if base is bool:
            if "/" not in decl:  # `--x/--no-x` is a boolean flag already
                kw["is_flag"] = True
        elif get_origin(base) is Literal:
            kw["type"] = click.Choice([str(a) for a in get_args(base)])
        elif base in (int, float):
            kw["type"] = base
        options.append(click.option(*decl.split(" "), f.name, **kw))
    return options


__all__ = [
    "DuplicateKey", "load_yaml", "apply_overrides", "bundled_configs", "check_types", "coerce_field", "describe",
    "field_help", "field_options", "field_types",
    "h", "parse_set", "read_yaml_mapping", "resolve_named", "suggest", "to_yaml", "type_name", "unknown_key_error",
    "values_from",
]
