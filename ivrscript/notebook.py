"""Notebook ergonomics that need to know the running cell (standard library only).

Re-running the cell that built an App or a Simulator stops the ones that same cell built
before, and says so in one line: the old Keypad no longer rings the old App, and the old App
ends its calls through ``on_error`` instead of leaving callers in silence. Apps and simulators
built in other cells, or outside a notebook, are left alone.

How the cell is known: IPython's ``pre_run_cell``/``post_run_cell`` events (registered once,
when ivrscript is imported in an IPython kernel) carry the cell's id (JupyterLab and Notebook 7
send ``cellId``; a client that sends none, nbclient for one, falls back to the cell's source).
After each cell, the running Apps and Simulators reachable from the user's namespace that were
not there before the cell are that cell's.

Also: the name of the notebook a script was defined in (for a cassette's ``script.file``),
instead of ipykernel's temporary file for the cell.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import weakref
from typing import Any

__all__ = ["install", "source_file", "notebook_name", "mismatch_html"]

_lock = threading.Lock()
_installed = False
_owned: dict[str, list[weakref.ref[Any]]] = {}  # cell key -> what that cell built
_known: weakref.WeakSet[Any] = weakref.WeakSet()  # every App/Simulator already seen
_before: set[int] = set()  # ids of the running ones before the current cell


def _shell() -> Any:
    """The running IPython kernel's shell, or None (plain Python, a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:
        return None
    return shell if shell is not None and hasattr(shell, "kernel") else None


def install() -> bool:
    """Register the cell hooks once in an IPython kernel; True if they are (now) registered."""
    global _installed
    shell = _shell()
    if shell is None:
        return False
    with _lock:
        if _installed:
            return True
        _installed = True
        _before.update(id(obj) for obj in _running_objects(shell))
        _known.update(_running_objects(shell))
    shell.events.register("pre_run_cell", _pre_run_cell)
    shell.events.register("post_run_cell", _post_run_cell)
    return True


def _is_ours(obj: Any) -> str | None:
    """"App" or "Simulator" for an ivrscript app or simulator, else None."""
    kind = type(obj).__name__
    module = type(obj).__module__ or ""
    if kind in ("App", "Simulator") and module.startswith("ivrscript."):
        return kind
    return None


def _is_running(obj: Any) -> bool:
    running = getattr(obj, "running", None)
    if isinstance(running, bool):
        return running
    return getattr(obj, "_state", None) == "running"  # the simulator (no public flag yet)


def _running_objects(shell: Any) -> list[Any]:
    """Running Apps and Simulators reachable from the user's namespace (one level deep:
    a variable, or the app/simulator of a variable's widget or app)."""
    found: dict[int, Any] = {}
    for value in list(shell.user_ns.values()):
        for candidate in (value, getattr(value, "app", None), getattr(value, "platform", None),
                          getattr(value, "simulator", None)):
            if candidate is not None and _is_ours(candidate) and _is_running(candidate):
                found[id(candidate)] = candidate
        app = getattr(value, "app", None)
        platform = getattr(app, "platform", None)
        if platform is not None and _is_ours(platform) and _is_running(platform):
            found[id(platform)] = platform
    return list(found.values())


def _cell_key(info: Any) -> str | None:
    cell_id = getattr(info, "cell_id", None)
    if cell_id:
        return f"id:{cell_id}"
    source = getattr(info, "raw_cell", None)
    return f"source:{source}" if source else None


def _pre_run_cell(info: Any) -> None:
    shell = _shell()
    if shell is None:
        return
    with _lock:
        _before.clear()
        _before.update(id(obj) for obj in _running_objects(shell))


def _post_run_cell(result: Any) -> None:
    shell = _shell()
    if shell is None:
        return
    key = _cell_key(getattr(result, "info", None))
    with _lock:
        new = [obj for obj in _running_objects(shell)
               if id(obj) not in _before and obj not in _known]
        _known.update(new)
        if key is None or not new:
            return
        old = [obj for ref in _owned.get(key, ()) if (obj := ref()) is not None]
        _owned[key] = [weakref.ref(obj) for obj in new]
    stale = [obj for obj in old if _is_running(obj) and all(obj is not n for n in new)]
    if stale:
        stop_replaced(stale)


def stop_replaced(stale: list[Any]) -> None:
    """Stop what a re-run cell built before (apps first: they end their calls on the old
    simulator) and say so in one line."""
    stale.sort(key=lambda obj: _is_ours(obj) != "App")
    names = []
    for obj in stale:
        where = ""
        try:
            where = f" on {obj.url}"
        except Exception:
            pass
        names.append(f"the {_is_ours(obj)}{where}")
        try:
            obj.stop()
        except Exception as error:  # stopping an old one must not fail the new cell
            names[-1] += f" (stopping it failed: {error})"
    print(f"ivrscript: this cell was run again: stopped {_join(names)} it built before")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def notebook_name() -> str | None:
    """The running notebook's file name, when the Jupyter server said it (JPY_SESSION_NAME)."""
    path = os.environ.get("JPY_SESSION_NAME")
    return os.path.basename(path) if path else None


def source_file(filename: str) -> str:
    """The file a function's code came from, as a person names it: the notebook for code
    defined in a notebook cell (ipykernel compiles each cell to a temporary file), else the
    file's base name."""
    if _is_cell_file(filename):
        return notebook_name() or "notebook cell"
    return os.path.basename(filename)


def _is_cell_file(filename: str) -> bool:
    folder = os.path.basename(os.path.dirname(filename))
    return folder.startswith("ipykernel_") or filename.startswith("<ipython-input-")


# -- a ReplayMismatch as HTML ----------------------------------------------------------------

_ERROR = "var(--jp-error-color1, #c62828)"
_BORDER = "var(--jp-border-color2, #ddd)"


def _pre(text: str) -> str:
    return ("<pre style='margin:0; white-space:pre-wrap; font-size:12px; line-height:1.35'>"
            f"{html.escape(text)}</pre>")


def mismatch_html(error: BaseException) -> str:
    """A ReplayMismatch as HTML: its summary, then what was recorded and what the script
    issued side by side (the rows that differ marked), then the transcript up to there.
    (``ReplayMismatch._repr_html_`` and ``widgets.show_mismatch`` use it.)"""
    text = str(error)
    lines = text.splitlines()
    summary = html.escape(lines[0]) if lines else ""
    rows: list[str] = []
    rest: list[str] = []
    in_table = False
    for line in lines[1:]:
        if line.startswith("  transcript up to there:"):
            in_table = False
            rest.append(line.strip())
            continue
        if not rest and (line.startswith("    ") or line.startswith("  * ")):
            in_table = True
            marked = line.startswith("  * ")
            cells = line[4:].split("  ")
            cells = [c.strip() for c in cells if c.strip()]
            if not rows:  # the header: "", recorded, issued
                rows.append("<tr><th></th>" + "".join(f"<th style='text-align:left'>"
                            f"{html.escape(c)}</th>" for c in cells) + "</tr>")
                continue
            key, values = (cells[0], cells[1:]) if cells else ("", [])
            if not marked:
                values = [values[0], values[0]] if values else ["", ""]
            style = " style='background:var(--jp-warn-color3, #fff3cd)'" if marked else ""
            rows.append(f"<tr{style}><td><b>{html.escape(key)}</b></td>" + "".join(
                f"<td style='word-break:break-all'><code>{html.escape(v)}</code></td>"
                for v in values[:2]) + "</tr>")
        elif in_table or rest:
            rest.append(line)
    table = (f"<table style='border-collapse:collapse; font-size:12px; width:100%; "
             f"table-layout:fixed'>{''.join(rows)}</table>" if rows else "")
    tail = _pre("\n".join(rest)) if rest else ""
    return (f"<div class='ivrscript-card' style='padding:6px 8px; border:1px solid {_BORDER}'>"
            f"<div style='color:{_ERROR}'><b>ReplayMismatch</b>: {summary}</div>{table}{tail}"
            "</div>")
