"""Jupyter widgets: a live dashboard of an App and a keypad phone for simulated calls.

    from ivrscript.widgets import Dashboard, Keypad
    Dashboard(app)          # or just leave `app` as the last line of a cell
    Keypad(sim, app)        # buttons "1".."9", "*", "0", "#", "Call", "Hang up"

This is the only module that imports ipywidgets (``pip install "ivrscript[notebook]"``).

Threads: the widgets are updated from the app's listener and worker threads and from the
simulator's event thread, never by polling, so cells return at once while calls run.
ipykernel >= 7.1 sends comm messages from any thread through its IOPub thread (7.0.0 broke
sends from threads that had no parent header: ipykernel#1450, ipywidgets#4001; 7.1 falls back
to the latest cell's). Traitlets and a widget's sync state (``hold_sync``) are not locked, so
every write here goes through one lock as one ``hold_sync`` batch, and nothing is printed from a
thread (an ``Output`` widget does not capture other threads' output reliably: ipywidgets#4020).
Warnings that ivrscript logs while a widget exists are shown in the widget's log line instead of
on stderr, where they would land in whichever cell ran last.
"""

from __future__ import annotations

import collections
import html
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .call import Call, TranscriptEvent, sensitive_collect
from .errors import IvrError

__all__ = ["Dashboard", "Keypad", "CallView"]

log = logging.getLogger("ivrscript.widgets")

KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")
_MAX_AUDIO_BYTES = 20 * 1024 * 1024
_lock = threading.RLock()  # every widget write, from any thread


def _set(widget: w.Widget, **traits: Any) -> None:
    """Set traits of ``widget`` from any thread: under the module lock, as one message."""
    with _lock, widget.hold_sync():
        for name, value in traits.items():
            setattr(widget, name, value)


def _pre(text: str) -> str:
    return ("<pre style='margin:0; white-space:pre-wrap; font-size:12px; line-height:1.35'>"
            f"{html.escape(text)}</pre>")


def _code(text: str) -> str:
    """A value the user can select with one click and copy."""
    return f"<code style='user-select:all'>{html.escape(text)}</code>"


# -- ivrscript's log, shown in the widgets -------------------------------------------------


class _WidgetLog(logging.Handler):
    """Shows ivrscript's warnings in the log line of every live widget (and keeps them off
    stderr, where a background thread's output lands in whichever cell ran last)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: collections.deque[str] = collections.deque(maxlen=5)
        self.views: weakref.WeakSet[w.HTML] = weakref.WeakSet()

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's own lock: emit() takes the widgets' lock, and one lock order
        # (never the handler's, then ours) leaves no room for a deadlock.
        if record.levelno < self.level or not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname.lower()}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                line += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        except Exception:  # a bad format string must not break the caller's thread
            line = f"{record.levelname.lower()}: {record.msg!r}"
        with _lock:
            self.lines.append(line)
            for view in list(self.views):
                self.show(view)

    def show(self, view: w.HTML) -> None:
        text = "\n".join(self.lines)
        _set(view, value=f"<div style='color:#a33'>{_pre(text)}</div>" if text else "")


_widget_log: _WidgetLog | None = None


def _log_view() -> w.HTML:
    """An HTML widget that shows ivrscript's recent warnings."""
    global _widget_log
    with _lock:
        if _widget_log is None:
            _widget_log = _WidgetLog()
            logging.getLogger("ivrscript").addHandler(_widget_log)
        view = w.HTML()
        _widget_log.views.add(view)
        _widget_log.show(view)
    return view


# -- one call --------------------------------------------------------------------------------


class CallView(w.VBox):
    """One call: a title line and its transcript, updated live as events are recorded."""

    def __init__(self, call: Call, **kwargs: Any) -> None:
        self.call = call
        self.title = w.HTML()
        self.text = w.HTML()
        super().__init__([self.title, self.text], **kwargs)
        # subscribe first, then draw: an event recorded in between is drawn either way
        self._unsubscribe: Callable[[], None] | None = call.transcript.subscribe(self._event)
        self.refresh()

    def _event(self, event: TranscriptEvent) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Redraw from the call's transcript (any thread)."""
        call = self.call
        state = f"ended: {call.end_reason}" if call.ended else "in progress"
        who = html.escape(call.caller or "?")
        title = (f"<b>{html.escape(call.script_name or 'call')}</b> &middot; from {who} "
                 f"&middot; {state} &middot; <span style='color:#888'>"
                 f"{html.escape(call.session_id)}</span>")
        _set(self.title, value=title)
        _set(self.text, value=_pre(str(call.transcript)))

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        super().close()


class _AppObserver:
    """The App's observer hooks, forwarded to a widget while it lives (weakly held)."""

    def __init__(self, app: Any, owner: Any) -> None:
        self.app = app
        self.owner = weakref.ref(owner, lambda _: self.detach())
        app._observers.append(self)

    def detach(self) -> None:
        try:
            self.app._observers.remove(self)
        except ValueError:
            pass

    def callback(self, kind: str, body: dict[str, Any]) -> None:
        pass  # the transcript tells the story

    def entered(self, call: Call) -> None:
        owner = self.owner()
        if owner is not None:
            owner._entered(call)

    def finished(self, call: Call) -> None:
        owner = self.owner()
        if owner is not None:
            owner._finished(call)


# -- the dashboard ---------------------------------------------------------------------------


class Dashboard(w.VBox):
    """An App at a glance: where it listens, its public and callback URLs (click one to
    select it), and its calls, newest last, each with a transcript that updates live.

    An App left as the last line of a notebook cell shows as one of these.
    """

    def __init__(self, app: Any, *, max_calls: int = 20, **kwargs: Any) -> None:
        self.app = app
        self.max_calls = max_calls
        self.header = w.HTML()
        self.urls = w.HTML()
        self.calls = w.VBox()
        self.log_line = _log_view()
        self._views: dict[str, CallView] = {}
        super().__init__([self.header, self.urls, self.calls, self.log_line], **kwargs)
        self._observer = _AppObserver(app, self)
        for call in list(app.calls):
            self._entered(call)
        self.refresh()

    def refresh(self) -> None:
        """Redraw the header and the URLs (any thread)."""
        app = self.app
        name = html.escape(getattr(app.script, "__name__", "?"))
        calls = list(app.calls)
        active = sum(1 for c in calls if not c.ended)
        try:
            local = app.url
            rows = [("public URL", app.public_url), *app.callback_urls.items()]
        except IvrError:  # not running (or stopping right now)
            where = "stopped (call <code>app.start()</code>)"
            urls = ""
        else:
            where = f"listening on {_code(local)}"
            urls = "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td>"
                           f"<td>{_code(v)}</td></tr>" for k, v in rows)
            urls = f"<table style='font-size:12px'>{urls}</table>"
        header = (f"<b>ivrscript App</b> &middot; script <code>{name}</code> &middot; {where} "
                  f"&middot; {len(calls)} calls, {active} in progress")
        if len(calls) > self.max_calls:
            header += f" (showing the last {self.max_calls})"
        _set(self.header, value=header)
        _set(self.urls, value=urls)

    def _entered(self, call: Call) -> None:
        with _lock:
            if call.session_id in self._views:
                return
            view = CallView(call, layout=w.Layout(border="1px solid #ddd", padding="2px 6px",
                                                  margin="2px 0"))
            self._views[call.session_id] = view
            shown = list(self._views.values())  # oldest first
            for old in shown[:-self.max_calls]:
                del self._views[old.call.session_id]
                old.close()
            _set(self.calls, children=tuple(shown[-self.max_calls:]))
        self.refresh()

    def _finished(self, call: Call) -> None:
        view = self._views.get(call.session_id)
        if view is not None:
            view.refresh()
        self.refresh()

    def close(self) -> None:
        self._observer.detach()
        for view in list(self._views.values()):
            view.close()
        self._views.clear()
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            bundle["text/plain"] = repr(self.app)
        return bundle

    def __repr__(self) -> str:
        return f"<Dashboard of {self.app!r}>"


# -- the keypad phone ------------------------------------------------------------------------


class Keypad(w.VBox):
    """A phone for simulated calls: "Call" rings ``app`` on ``simulator``, the keys press
    DTMF keys, "Hang up" hangs up. A line shows what is playing and whether the app is
    listening; below it, the call's transcript, and the prompt (when it is a local WAV file)
    as audio you can hear.

    Clicks return at once: keys go to the platform as pressed (``phone.press(wait=False)``),
    as on a real phone, so press them while the app listens. ``keypad.phone`` is the
    simulated :class:`~ivrscript.Phone` of the current call and ``keypad.call`` the app's
    :class:`~ivrscript.Call`.
    """

    def __init__(self, simulator: Any, app: Any, *, caller: str = "+15550100",
                 **kwargs: Any) -> None:
        self.simulator = simulator
        self.app = app
        self.caller = caller
        self.phone: Any = None
        self.call: Call | None = None
        self.keys_pressed = ""
        self.buttons: dict[str, w.Button] = {}
        rows = []
        for row in (KEYS[0:3], KEYS[3:6], KEYS[6:9], KEYS[9:12]):
            buttons = []
            for key in row:
                button = w.Button(description=key, layout=w.Layout(width="48px"))
                button.on_click(self._on_key)
                self.buttons[key] = button
                buttons.append(button)
            rows.append(w.HBox(buttons))
        self.call_button = w.Button(description="Call", button_style="success",
                                    layout=w.Layout(width="72px"))
        self.hang_up_button = w.Button(description="Hang up", button_style="danger",
                                       layout=w.Layout(width="72px"))
        self.call_button.on_click(self._on_call)
        self.hang_up_button.on_click(self._on_hang_up)
        self.buttons["Call"] = self.call_button
        self.buttons["Hang up"] = self.hang_up_button
        self.status = w.HTML()
        self.audio = w.Audio(value=b"", format="wav", autoplay=True, controls=True,
                             layout=w.Layout(display="none"))
        self.transcript = w.VBox()
        self.log_line = _log_view()
        pad = w.VBox([*rows, w.HBox([self.call_button, self.hang_up_button])])
        super().__init__([pad, self.status, self.audio, self.transcript, self.log_line], **kwargs)
        self._message = ""
        self._observer = _AppObserver(app, self)
        ref = weakref.ref(self)

        def on_phone_event(phone: Any, event: Any) -> None:  # the simulator's event thread
            keypad = ref()
            if keypad is not None and phone is keypad.phone:
                keypad._phone_event(event)

        simulator.add_listener(on_phone_event)  # listeners cannot be removed: hold self weakly
        self.refresh()

    # -- clicks (the kernel's thread: return at once) -------------------------------------

    def _on_call(self, _button: Any = None) -> None:
        if self.phone is not None and not self.phone.ended:
            self.refresh("A call is in progress: hang up first.")
            return
        try:
            phone = self.simulator.call(self.app, caller=self.caller)
        except (IvrError, RuntimeError) as error:
            self.refresh(f"Cannot call: {error}")
            return
        with _lock:
            self.phone = phone
            self.keys_pressed = ""
            self.call = next((c for c in self.app.calls if c.session_id == phone.session_id),
                             None)
            old = self.transcript.children
            if self.call is not None:
                _set(self.transcript, children=(CallView(self.call),))
            else:
                _set(self.transcript, children=())
            for view in old:
                view.close()
        self.refresh("" if phone.error is None else f"The app did not answer: {phone.error}")

    def _on_key(self, button: w.Button) -> None:
        key = button.description
        phone = self.phone
        if phone is None or phone.ended:
            self.refresh("No call in progress: press Call first.")
            return
        try:
            phone.press(key, wait=False)
        except IvrError as error:
            self.refresh(str(error))
            return
        self.keys_pressed += key
        self.refresh("")

    def _on_hang_up(self, _button: Any = None) -> None:
        phone = self.phone
        if phone is None or phone.ended:
            self.refresh("No call in progress.")
            return
        phone.hang_up()
        self.refresh("")

    def press(self, keys: str) -> None:
        """Click the buttons of ``keys`` in order (what a cell does instead of a finger)."""
        for key in keys:
            self.buttons[key].click()

    # -- updates (any thread) -------------------------------------------------------------

    def _phone_event(self, event: Any) -> None:
        if event.kind == "play":
            self._show_prompt(event.details)
        self.refresh()

    def _entered(self, call: Call) -> None:
        pass  # the keypad follows its own call only; "Call" picks it up

    def _finished(self, call: Call) -> None:
        if call is self.call:
            for view in self.transcript.children:
                if isinstance(view, CallView):
                    view.refresh()
            self.refresh()

    def _show_prompt(self, uri: str) -> None:
        path = _local_media(self.app, uri)
        if path is None or not path.lower().endswith(".wav"):
            return
        try:
            if os.path.getsize(path) > _MAX_AUDIO_BYTES:
                return
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            return
        _set(self.audio, value=data, format="wav")
        _set(self.audio.layout, display="")

    def refresh(self, message: str | None = None) -> None:
        """Redraw the status line; ``message`` (if given) replaces the note under it."""
        if message is not None:
            self._message = message
        phone = self.phone
        if phone is None:
            line = "Ready: press <b>Call</b> to ring the app."
        elif phone.ended:
            line = f"Call ended: <b>{html.escape(str(phone.end_reason))}</b>"
            if phone.forwarded_to:
                line += f" to {html.escape(str(phone.forwarded_to))}"
        else:
            playing = phone.playing
            play = (f"&#9654; playing <code>{html.escape(_media_name(playing))}</code>"
                    if playing else "nothing playing")
            patterns = phone.collect_patterns
            listen = (f"<b style='color:#080'>&#9679; listening</b> for "
                      f"<code>{html.escape(' '.join(patterns))}</code>"
                      if patterns is not None else "<span style='color:#888'>not listening"
                                                   "</span>")
            line = f"{play} &middot; {listen}"
        if phone is not None and self.keys_pressed:
            keys = "****" if sensitive_collect(self.call) else self.keys_pressed
            line += f" &middot; keys <code>{html.escape(keys)}</code>"
        if self._message:
            line += f"<br><i>{html.escape(self._message)}</i>"
        _set(self.status, value=line)

    def close(self) -> None:
        self._observer.detach()
        for view in self.transcript.children:
            view.close()
        super().close()

    def __repr__(self) -> str:
        return f"<Keypad for {self.app!r}: {self.phone!r}>" if self.phone else (
            f"<Keypad for {self.app!r}: no call yet>")


def _media_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _local_media(app: Any, uri: str) -> str | None:
    """The local file behind a media URL the app serves, or None."""
    if not app.running:
        return None
    prefix = f"{app.public_url}/{app.secret}/media/"
    if not uri.startswith(prefix):
        return None
    media_id, _, name = uri[len(prefix):].partition("/")
    found = app._media.lookup(media_id, name)
    return found[0] if found else None
