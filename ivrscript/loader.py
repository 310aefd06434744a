"""Checking a script before any call: the mistakes a yield-based script makes silently.

Found statically, from the source of the entry function and of every function it reaches in
the script's module and in modules beside it (the same folder), and issued as warnings with the
file and line (a subclass of :class:`ScriptWarning`; ``pytest``'s ``filterwarnings = error``
fails a test on them, the CLI's ``--strict`` exits 2):

- a command built but not yielded (``ivr.play("hi.wav")`` alone on a line) never runs;
- a sub-flow (a generator function) called without ``yield`` never runs: ``ok = ask_pin(call)``
  binds a generator object, which is always true, so the PIN is never asked;
- a literal prompt path that is not found (beside the script, then the working directory), or
  a file the platform cannot play well (see :func:`ivrscript.media.prompt_problem`);
- a literal time that looks like milliseconds.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import CodeType, FunctionType, ModuleType
from typing import Any

from . import commands
from .commands import MAX_INTER_DIGIT_TIMEOUT, MAX_TIMEOUT, time_limit_message
from .errors import ConfigError
from .media import find_media, first_report, is_remote, prompt_problem
from .tts import say

__all__ = ["check_script", "find_unyielded", "load_script_file", "NotYieldedWarning",
           "PromptWarning", "ScriptLoadError", "ScriptWarning", "TimeUnitWarning"]

COMMAND_NAMES = frozenset({"play", "collect", "forward", "hangup", "menu", "say"})


class ScriptWarning(UserWarning):
    """A mistake in a script found before any call (the base of the loader's warnings)."""


class NotYieldedWarning(ScriptWarning):
    """A command was built, or a sub-flow called, but not yielded, so it will never run."""


class PromptWarning(ScriptWarning):
    """A literal prompt file is missing, or is not audio the platform plays well."""


class TimeUnitWarning(ScriptWarning):
    """A literal time is far beyond what an IVR means (milliseconds passed as seconds?)."""


class ScriptLoadError(ConfigError):
    """The script file could not be loaded (missing, syntax error, no such function, ...)."""


@dataclass(frozen=True)
class Slip:
    """One finding: where, the command or function ``name``, and what is wrong."""

    filename: str
    line: int
    name: str
    text: str = ""
    category: type[ScriptWarning] = NotYieldedWarning

    def message(self) -> str:
        text = self.text or (f"{self.name}(...) is built but not yielded, so it never runs: "
                             f"write 'yield ivr.{self.name}(...)'")
        return f"{self.filename}:{self.line}: {text}"


def _command_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in COMMAND_NAMES:
        return func.attr
    if isinstance(func, ast.Name) and func.id in COMMAND_NAMES:
        return func.id
    return None


# -- what happens to a value: yielded, passed on, or lost -----------------------------------

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _scope_of(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    while node in parents:
        node = parents[node]
        if isinstance(node, _SCOPES):
            return node
    return node


def _fate(node: ast.AST, parents: dict[ast.AST, ast.AST],
          seen: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """None if the value of ``node`` is yielded or passed on; else (how it is lost, the name it
    was bound to or ""): "bare" (a statement), "test" (a condition), "unused", "value"."""
    parent = parents.get(node)
    if parent is None:
        return None
    if isinstance(parent, ast.Yield | ast.YieldFrom | ast.Return | ast.Await | ast.keyword
                  | ast.List | ast.Tuple | ast.Set | ast.Dict | ast.Attribute | ast.Subscript
                  | ast.Lambda):
        if isinstance(parent, ast.Subscript) and node is parent.value:
            return ("value", "")
        return None
    if isinstance(parent, ast.Starred):
        return _fate(parent, parents, seen)
    if isinstance(parent, ast.Call):
        return ("value", "") if node is parent.func else None
    if isinstance(parent, ast.For | ast.AsyncFor | ast.comprehension):
        return None if node is parent.iter else ("value", "")
    if isinstance(parent, ast.Expr):
        return ("bare", "")
    if isinstance(parent, ast.If | ast.While | ast.IfExp | ast.Assert):
        return ("test", "") if node is parent.test else _fate(parent, parents, seen)
    if isinstance(parent, ast.BoolOp | ast.UnaryOp | ast.Compare):
        return ("test", "")
    if isinstance(parent, ast.Assign | ast.AnnAssign | ast.NamedExpr):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        if not all(isinstance(t, ast.Name) for t in targets):
            return None  # stored in an attribute or a container: passed on
        if isinstance(parent, ast.NamedExpr) and _fate(parent, parents, seen) is None:
            return None
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        return _fate_of_names(names, _scope_of(parent, parents), parents, seen)
    return ("value", "")


def _fate_of_names(names: list[str], scope: ast.AST, parents: dict[ast.AST, ast.AST],
                   seen: frozenset[str]) -> tuple[str, str] | None:
    worst: tuple[str, str] = ("unused", names[0])
    for name in names:
        if name in seen:
            return None  # a loop through assignments: give it the benefit of the doubt
        for use in ast.walk(scope):
            if isinstance(use, ast.Name) and use.id == name and isinstance(use.ctx, ast.Load):
                fate = _fate(use, parents, seen | {name})
                if fate is None:
                    return None
                if fate[0] == "test" or worst[0] == "unused":
                    worst = (fate[0], name)
    return worst


def find_unyielded(source: str, filename: str = "<script>", first_line: int = 1) -> list[Slip]:
    """Commands built but not yielded in ``source``, e.g. ``ivr.play("x.wav")`` on its own
    line, or ``pin = ivr.collect(...)`` with ``pin`` then used as the keys."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    parents = _parents(tree)
    slips = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _command_name(node)
            if name:
                slip = _command_slip(node, name, parents, filename, node.lineno + first_line - 1)
                if slip:
                    slips.append(slip)
    return sorted(slips, key=lambda s: s.line)


def _command_slip(node: ast.Call, name: str, parents: dict[ast.AST, ast.AST], filename: str,
                  line: int) -> Slip | None:
    fate = _fate(node, parents)
    if fate is None:
        return None
    how, var = fate
    if how == "bare":
        return Slip(filename, line, name)
    if var:
        text = (f"{name}(...) is assigned to {var!r} but never yielded, so it never runs: "
                f"write '{var} = yield ivr.{name}(...)'")
    else:
        text = (f"{name}(...) is built but not yielded, so it never runs: write "
                f"'(yield ivr.{name}(...))'")
    return Slip(filename, line, name, text)


def _subflow_slip(node: ast.Call, name: str, parents: dict[ast.AST, ast.AST], filename: str,
                  line: int) -> Slip | None:
    fate = _fate(node, parents)
    if fate is None:
        return None
    how, var = fate
    head = f"{name}(...) is a sub-flow (a generator function) called without 'yield', so it "
    if how == "bare":
        text = head + f"never runs: write 'yield {name}(...)'"
    elif var and how == "test":
        text = (head + f"never runs and {var!r} is a generator object, always true: write "
                f"'{var} = yield {name}(...)'")
    elif var:
        text = head + f"never runs ({var!r} is never yielded): write '{var} = yield {name}(...)'"
    elif how == "test":
        text = (head + "never runs and its generator object is always true: write "
                f"'if (yield {name}(...)):'")
    else:
        text = head + f"never runs: write 'result = yield {name}(...)' (or 'yield from')"
    return Slip(filename, line, name, text)


# -- the whole script: every function the entry function reaches ----------------------------


def _own_nodes(fn: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function's own body (not of functions or classes defined in it)."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                          | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def _is_generator_def(fn: ast.AST) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _own_nodes(fn))


class _Checker:
    """Walks the functions an entry function reaches in its own folder, collecting slips."""

    def __init__(self, entry: FunctionType) -> None:
        # A notebook's cells are files that do not exist, all in one folder (or "<cell>").
        self.folder = os.path.dirname(os.path.abspath(entry.__code__.co_filename))
        folder = _source_dir(entry)
        self.media_dirs = [folder] if folder else []
        self.slips: list[Slip] = []
        self._done: set[CodeType] = set()
        self._todo: list[FunctionType] = [entry]

    def run(self) -> list[Slip]:
        while self._todo:
            self._check(self._todo.pop())
        unique = {(s.filename, s.line, s.text or s.name): s for s in self.slips}
        return sorted(unique.values(), key=lambda s: (s.filename, s.line))

    def _ours(self, obj: Any) -> FunctionType | None:
        """``obj`` as a function of the script's own code (same file or folder), or None."""
        try:
            obj = inspect.unwrap(obj) if callable(obj) else obj
        except ValueError:  # a loop of __wrapped__
            return None
        if not isinstance(obj, FunctionType) or obj.__code__.co_name == "<lambda>":
            return None
        path = obj.__code__.co_filename
        if path.startswith("<"):  # a cell or the interpreter is the user's; <frozen os> not
            return None if path.startswith("<frozen") else obj
        return obj if os.path.dirname(os.path.abspath(path)) == self.folder else None

    def _check(self, fn: FunctionType) -> None:
        if fn.__code__ in self._done:
            return
        self._done.add(fn.__code__)
        try:
            lines, first = inspect.getsourcelines(fn)
            filename = inspect.getsourcefile(fn) or fn.__code__.co_filename
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError, IndentationError):
            return
        parents = _parents(tree)
        local_defs: dict[str, ast.AST] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node is not \
                    tree.body[0]:
                local_defs.setdefault(node.name, node)
        env = _environment(fn)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 1) + first - 1
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                    and node.id not in local_defs:
                self._reach(env.get(node.id))
            if not isinstance(node, ast.Call):
                continue
            target, name = self._target(node, local_defs, env)
            if target == "subflow":
                slip = _subflow_slip(node, name, parents, filename, line)
                if slip:
                    self.slips.append(slip)
            elif target == "command":
                slip = _command_slip(node, name, parents, filename, line)
                if slip:
                    self.slips.append(slip)
                self.slips.extend(self._literal_slips(node, name, filename, line))
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                self._reach(_module_attribute(env.get(node.func.value.id), node.func.attr))

    def _reach(self, obj: Any) -> None:
        fn = self._ours(obj)
        if fn is not None and fn.__code__ not in self._done:
            self._todo.append(fn)

    def _target(self, node: ast.Call, local_defs: dict[str, ast.AST],
                env: dict[str, Any]) -> tuple[str, str]:
        """("subflow" | "command" | "", the name to show) for a call."""
        func = node.func
        obj: Any = None
        if isinstance(func, ast.Name):
            if func.id in local_defs:
                local = local_defs[func.id]
                undecorated = not getattr(local, "decorator_list", None)
                return ("subflow" if undecorated and _is_generator_def(local) else "", func.id)
            obj = env.get(func.id, _MISSING)
            shown = func.id
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            obj = _module_attribute(env.get(func.value.id), func.attr)
            shown = f"{func.value.id}.{func.attr}"
        else:
            return ("", "")
        # The object itself, not what it wraps: @contextmanager's function is no sub-flow.
        if self._ours(obj) is not None and inspect.isgeneratorfunction(obj):
            return ("subflow", shown)
        if _is_builder(obj):
            return ("command", obj.__name__)
        command = _command_name(node)
        return ("command", command) if command and obj is _MISSING else ("", "")

    def _literal_slips(self, node: ast.Call, name: str, filename: str, line: int) -> list[Slip]:
        """Literal prompt paths and times of a command: missing files, unplayable audio,
        milliseconds."""
        media: list[ast.AST] = []
        times: list[tuple[str, ast.AST]] = []
        if name == "play":
            media.extend(node.args)
        elif name == "menu" and node.args:
            media.append(node.args[0])
        for kw in node.keywords:
            if kw.arg in ("prompt", "invalid", "no_input") and name in ("collect", "menu"):
                media.append(kw.value)
            elif kw.arg in ("timeout", "inter_digit_timeout") and name in ("collect", "menu"):
                times.append((kw.arg, kw.value))
        slips = []
        for ref in (r for value in media for r in _literal_strings(value)):
            problem = self._media_problem(ref)
            if problem:
                slips.append(Slip(filename, line, name, problem, PromptWarning))
        for arg, value in times:
            if isinstance(value, ast.Constant) and isinstance(value.value, int | float) \
                    and not isinstance(value.value, bool):
                limit = MAX_TIMEOUT if arg == "timeout" else MAX_INTER_DIGIT_TIMEOUT
                if value.value > limit:
                    slips.append(Slip(filename, line, name,
                                      f"{name}(): " + time_limit_message(arg, value.value, limit),
                                      TimeUnitWarning))
        return slips

    def _media_problem(self, ref: str) -> str | None:
        if is_remote(ref) or not ref.strip():
            return None
        path = find_media(ref, self.media_dirs)
        if path is None:
            places = ", ".join(dict.fromkeys([*self.media_dirs, os.getcwd()]))
            return f"prompt file not found: {ref!r} (looked in {places})"
        problem = prompt_problem(path)
        if problem:
            first_report(path)  # warned here: the first play need not log it again
        return problem


_MISSING = object()


def _is_builder(obj: Any) -> bool:
    """Whether ``obj`` is one of ivrscript's command builders (``ivr.play``, ...)."""
    return (isinstance(obj, FunctionType) and obj.__module__ == commands.__name__
            and obj.__name__ in commands.__all__) or obj is say  # say(text): play(speech(text))


def _module_attribute(owner: Any, name: str) -> Any:
    """``owner.name`` if ``owner`` is a module that has it, else _MISSING."""
    if not isinstance(owner, ModuleType):
        return _MISSING
    try:
        return getattr(owner, name, _MISSING)
    except Exception:  # a module's own __getattr__ failing is not the script's mistake
        return _MISSING


def _literal_strings(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.List | ast.Tuple):
        for item in node.elts:
            yield from _literal_strings(item)


def _environment(fn: FunctionType) -> dict[str, Any]:
    """The names a function sees: its globals, then its closure's variables on top."""
    env = dict(fn.__globals__)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
        try:
            env[name] = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
    return env


def _source_dir(fn: Any) -> str | None:
    path = getattr(getattr(fn, "__code__", None), "co_filename", "") or ""
    if not path or path.startswith("<") or not os.path.exists(path):
        return None
    return os.path.dirname(os.path.abspath(path))


def check_script(script: Any, *, warn: bool = True) -> list[Slip]:
    """Raise TypeError unless ``script`` is a generator function; find the silent mistakes.

    Returns what was found (also issued as warnings, subclasses of :class:`ScriptWarning`,
    with the file and line, when ``warn``).
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
    if not isinstance(target, FunctionType):
        return []
    slips = _Checker(target).run()
    if warn:
        for slip in slips:
            warnings.warn_explicit(slip.message(), slip.category, slip.filename, slip.line)
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
    # As `python script.py` does: modules beside the script (its sub-flows) import by name.
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
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
