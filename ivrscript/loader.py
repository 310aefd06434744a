"""Checking a script before any call: is it a generator function, and is every command yielded?

A command built but not yielded (``ivr.play("hi.wav")`` alone on a line) does nothing at all:
the classic slip in every yield-based DSL. It is found statically, from the function's source.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import ConfigError

__all__ = ["check_script", "find_unyielded", "load_script_file", "NotYieldedWarning",
           "ScriptLoadError"]

COMMAND_NAMES = frozenset({"play", "collect", "forward", "hangup", "menu"})


class NotYieldedWarning(UserWarning):
    """A command was built but not yielded, so it will never run."""


class ScriptLoadError(ConfigError):
    """The script file could not be loaded (missing, syntax error, no such function, ...)."""


@dataclass(frozen=True)
class Slip:
    filename: str
    line: int
    name: str

    def message(self) -> str:
        return (f"{self.filename}:{self.line}: {self.name}(...) is built but not yielded, so it "
                f"never runs: write 'yield ivr.{self.name}(...)'")


def _command_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in COMMAND_NAMES:
        return func.attr
    if isinstance(func, ast.Name) and func.id in COMMAND_NAMES:
        return func.id
    return None


def find_unyielded(source: str, filename: str = "<script>", first_line: int = 1) -> list[Slip]:
    """Statements that are a bare command call, e.g. ``ivr.play("x.wav")`` on its own line."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    slips = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            name = _command_name(node.value)
            if name:
                slips.append(Slip(filename, node.lineno + first_line - 1, name))
    return sorted(slips, key=lambda s: s.line)


def check_script(script: Any, *, warn: bool = True) -> list[Slip]:
    """Raise TypeError unless ``script`` is a generator function; warn about unyielded commands.

    Returns the slips found (also issued as :class:`NotYieldedWarning` when ``warn``).
    """
    if not callable(script):
        raise TypeError(f"the script must be a generator function taking the call, got "
                        f"{script!r}")
    target = inspect.unwrap(script)
    if not inspect.isgeneratorfunction(target):
        name = getattr(target, "__qualname__", repr(target))
        raise TypeError(
            f"the script {name}() is not a generator function: a call script must use "
            "'yield' to issue commands, e.g. 'yield ivr.play(\"hello.wav\")'")
    try:
        lines, first = inspect.getsourcelines(target)
        filename = inspect.getsourcefile(target) or "<script>"
    except (OSError, TypeError):
        return []
    slips = find_unyielded("".join(lines), filename, first)
    if warn:
        for slip in slips:
            warnings.warn_explicit(slip.message(), NotYieldedWarning, slip.filename, slip.line)
    return slips


def script_dir(script: Any) -> str | None:
    """The folder of the file that defines ``script`` (where relative prompts are looked up)."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(script))
    except (OSError, TypeError):
        path = None
    if not path or path.startswith("<") or not os.path.exists(path):
        return None
    return os.path.dirname(os.path.abspath(path))


def load_script_file(spec: str) -> tuple[Callable[..., Any], ModuleType]:
    """Load ``path/to/script.py[:function]`` (default function ``main``) and check it.

    Raises :class:`ScriptLoadError` with a one-sentence message for every user mistake.
    """
    path, _, func = spec.partition(":")
    func = func or "main"
    if not path.endswith(".py") and ":" not in spec and os.path.exists(path + ".py"):
        path += ".py"
    if not os.path.isfile(path):
        raise ScriptLoadError(f"no such script file: {path}")
    name = "ivrscript_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    module_spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if module_spec is None or module_spec.loader is None:
        raise ScriptLoadError(f"cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ScriptLoadError(
            f"syntax error in {error.filename or path}, line {error.lineno}: {error.msg}"
        ) from None
    except Exception as error:
        raise ScriptLoadError(f"{path} raised {type(error).__name__} while loading: "
                              f"{error}") from error
    script = getattr(module, func, None)
    if script is None:
        raise ScriptLoadError(f"{path} has no function {func!r}"
                              + (" (name one with SCRIPT.py:function)" if func == "main" else ""))
    try:
        check_script(script)
    except TypeError as error:
        raise ScriptLoadError(f"{path}: {error}") from None
    return script, module
