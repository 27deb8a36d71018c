"""Config files named as `--config=` names them, and dotted-key overrides, outside absl.

`sweep` reads a config file's `get_sweep` and sets its runs' overrides; `downstream`
builds each task's fine-tuning config. Both go through here, so a key that does not
exist or a value of the wrong type is one error naming where it came from.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import sys
import tokenize
from types import ModuleType
from typing import Any

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find(path: str, what: str) -> str:
    """The config file at `path`, relative to the working directory or, failing that, to
    the repository (configs/... works from anywhere), checked to be Python source that
    can be loaded: ValueError naming `what` and the file (one line) otherwise."""
    found = next((p for p in (path, os.path.join(ROOT, path)) if os.path.isfile(p)), None)
    if found is None:
        raise ValueError(f"{what}: {path}: no such config file")
    try:
        with open(found, "rb") as f:
            source = f.read()
    except OSError as e:
        raise ValueError(f"{what}: {found}: {e.strerror}") from None
    try:  # PEP 263: UTF-8 unless a coding line says otherwise
        encoding = tokenize.detect_encoding(io.BytesIO(source).readline)[0]
    except SyntaxError:  # a bad coding line, or bytes that are not UTF-8 in the first two
        encoding = "utf-8"
    try:
        source.decode(encoding)
    except (UnicodeDecodeError, LookupError) as e:
        at = getattr(e, "start", 0)
        line = source[:at].count(b"\n") + 1
        raise ValueError(
            f"{what}: {found} is not {encoding} text (byte 0x{source[at]:02x} "
            f"on line {line}); a config file is Python source in UTF-8"
        ) from None
    try:
        compile(source, found, "exec")
    except SyntaxError as e:
        raise ValueError(f"{what}: {found}:{e.lineno}: {e.msg}") from None
    return found


def load_module(path: str, what: str) -> ModuleType:
    """The config file at `path` (see `find`) as a module."""
    found = find(path, what)
    name = "bertjax_config_" + os.path.splitext(os.path.basename(found))[0]
    spec = importlib.util.spec_from_file_location(name, found)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def load_config(spec: str, what: str = "config") -> ml_collections.ConfigDict:
    """`get_config(ARG)` of the config file `FILE[:ARG]`."""
    path, _, arg = spec.partition(":")
    module = load_module(path, what)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{what}: {path} defines no get_config")
    return module.get_config(arg) if arg else module.get_config()


def parse_value(text: str, current: Any) -> Any:
    """A command-line VALUE as the type of the key's current value (as --config.KEY=VALUE)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a boolean")
        return text.lower() in ("true", "1")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_key(config: Any, key: str, value: Any, what: str) -> None:
    """config[KEY] = value for a dotted KEY that must exist; a string is read as the
    key's type. Errors name `what` (where the override came from) and the key."""
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(
                f"{what}: unknown config key {key!r} "
                f"({'.'.join(parents[: i + 1])} is not a config section)"
            )
        node = node[part]
    if leaf not in node:
        raise ValueError(f"{what}: unknown config key {key!r}")
    if isinstance(value, str) and not isinstance(node[leaf], str):
        try:
            value = parse_value(value, node[leaf])
        except ValueError as e:
            raise ValueError(f"{what}: {key}={value}: {e}") from None
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {key}={value!r}: {e}") from None


def parse_overrides(text: str, what: str) -> list[tuple[str, str]]:
    """ "KEY=VALUE KEY=VALUE" -> [(KEY, VALUE)]."""
    pairs = []
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs
