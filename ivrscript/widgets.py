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
Warnings that ivrscript logs while a widget exists are shown in the log line of the widgets of
the App they concern (one line each, no traceback: that is in the call's transcript) instead of
on stderr, where they would land in whichever cell ran last.

Colours come from JupyterLab's theme (``--jp-*`` CSS variables, with fallbacks elsewhere).
"""

from __future__ import annotations

import collections
import html
import io
import logging
import os
import re
import threading
import wave
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import ipywidgets as w

from .call import Call, TranscriptEvent, sensitive_collect
from .errors import IvrError, ReplayMismatch
from .notebook import mismatch_html
from .text import clean
from .tts import heard

__all__ = ["Dashboard", "Keypad", "CallView", "show_mismatch"]

log = logging.getLogger("ivrscript.widgets")

KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")
_MAX_AUDIO_BYTES = 20 * 1024 * 1024
_lock = threading.RLock()  # every widget write, from any thread

# Theme colours: JupyterLab's CSS variables, with fallbacks for other frontends.
_ERROR = "var(--jp-error-color1, #c62828)"
_DIM = "var(--jp-ui-font-color2, #777)"
_OK = "var(--jp-success-color1, #2e7d32)"
_BORDER = "var(--jp-border-color2, #ddd)"

_STYLE = f"""<style>
.ivrscript-card {{ border: 1px solid {_BORDER}; border-radius: 6px;
  background: var(--jp-layout-color1, transparent); color: var(--jp-ui-font-color1, inherit); }}
.ivrscript-keypad {{ width: fit-content; padding: 10px 12px; border-radius: 16px;
  border: 1px solid var(--jp-border-color1, #bbb); background: var(--jp-layout-color2, #f5f5f5);
  box-shadow: var(--jp-elevation-z2, none); }}
.ivrscript-keypad .ivrscript-key {{ border-radius: 18px; font-size: 15px; font-weight: 600; }}
.ivrscript-keypad .ivrscript-action {{ border-radius: 16px; }}
</style>"""


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
    """Shows ivrscript's warnings in the log lines of live widgets (and keeps them off stderr,
    where a background thread's output lands in whichever cell ran last).

    A warning about a call (its session id in the message) goes to the widgets of the App
    that has that call, and to no other; one that names no call (a process-wide problem) goes
    to every live widget. Each widget keeps its own last lines: a new widget starts empty.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        # log line widget -> (its App, weakly; its lines)
        self.views: weakref.WeakKeyDictionary[w.HTML, tuple[Any, collections.deque[str]]] = (
            weakref.WeakKeyDictionary())

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's own lock: emit() takes the widgets' lock, and one lock order
        # (never the handler's, then ours) leaves no room for a deadlock.
        if record.levelno < self.level or not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            line = f"{record.levelname.lower()}: {_one_line(message)}"
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                line += f" ({type(error).__name__}: {_one_line(str(error))})"
        except Exception:  # a bad format string must not break the caller's thread
            message, line = "", f"{record.levelname.lower()}: {record.msg!r}"
        sessions = set(_SESSION_ID.findall(message))
        with _lock:
            for view, (ref, lines) in list(self.views.items()):
                app = ref()
                if sessions and (app is None or not _has_a_call(app, sessions)):
                    continue  # about a call of another App (shown or not)
                lines.append(line)
                self.show(view, lines)

    @staticmethod
    def show(view: w.HTML, lines: collections.deque[str]) -> None:
        text = "\n".join(lines)
        _set(view, value=f"<div style='color:{_ERROR}'>{_pre(text)}</div>" if text else "")


def _one_line(message: str) -> str:
    """A log message as one line: a traceback (it is in the transcript) becomes its last line,
    the exception."""
    head, marker, tail = message.partition("Traceback (most recent call last):")
    if marker:
        last = [line for line in tail.strip().splitlines() if line.strip()]
        message = head + (last[-1].strip() if last else "")
    return clean(message.strip().splitlines()[0] if message.strip() else "", 300)


_SESSION_ID = re.compile(r"\bs-[0-9A-Za-z]{8,}")  # a telephony session id in a log message


def _has_a_call(app: Any, sessions: set[str]) -> bool:
    calls = list(getattr(app, "calls", ()))[-500:]  # recent calls: a long-running app has many
    return any(call.session_id in sessions for call in calls)


_widget_log: _WidgetLog | None = None


def _log_view(app: Any) -> w.HTML:
    """An HTML widget that shows ivrscript's recent warnings about ``app``."""
    global _widget_log
    with _lock:
        if _widget_log is None:
            _widget_log = _WidgetLog()
            logging.getLogger("ivrscript").addHandler(_widget_log)
        view = w.HTML()
        _widget_log.views[view] = (weakref.ref(app), collections.deque(maxlen=5))
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
                 f"&middot; {state} &middot; <span style='color:{_DIM}'>"
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

    def stopped(self, app: Any) -> None:
        owner = self.owner()
        if owner is not None:
            owner._stopped(app)


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
        self.log_line = _log_view(app)
        self._views: dict[str, CallView] = {}
        super().__init__([w.HTML(_STYLE), self.header, self.urls, self.calls, self.log_line],
                         **kwargs)
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
            where = f"<b style='color:{_DIM}'>stopped</b>"
            urls = ""
        else:
            where = f"listening on {_code(local)}"
            urls = "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td>"
                           f"<td>{_code(v)}</td></tr>" for k, v in rows)
            urls = f"<table style='font-size:12px'>{urls}</table>"
        header = (f"<b>ivrscript App</b> &middot; script <code>{name}</code> &middot; {where} "
                  f"&middot; {_plural(len(calls), 'call')}, {active} in progress")
        if len(calls) > self.max_calls:
            header += f" (showing the last {self.max_calls})"
        _set(self.header, value=header)
        _set(self.urls, value=urls)

    def _entered(self, call: Call) -> None:
        with _lock:
            if call.session_id in self._views:
                return
            view = CallView(call, layout=w.Layout(padding="2px 8px", margin="2px 0"))
            view.add_class("ivrscript-card")
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

    def _stopped(self, app: Any) -> None:
        for view in list(self._views.values()):
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
    DTMF keys, "Hang up" hangs up. A line shows what is playing, whether the app is listening
    and the keys pressed for each collect; below it, the prompt (when it is a local WAV file)
    as audio you hear once, and the call's transcript.

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
        self.keys_pressed = ""  # every key of the current call, in order
        # the keys pressed for each collect: (the collect's index in the call, or None before
        # the first one; the keys)
        self.key_groups: list[tuple[int | None, str]] = []
        self._listens = 0
        self.buttons: dict[str, w.Button] = {}
        for key in KEYS:
            button = w.Button(description=key, layout=w.Layout(width="52px", height="36px"))
            button.add_class("ivrscript-key")
            button.on_click(self._on_key)
            self.buttons[key] = button
        keys = w.GridBox(list(self.buttons.values()), layout=w.Layout(
            grid_template_columns="repeat(3, 56px)", grid_gap="6px 8px", width="max-content",
            overflow="visible"))
        self.call_button = w.Button(description="Call", button_style="success",
                                    icon="phone", layout=w.Layout(width="84px"))
        self.hang_up_button = w.Button(description="Hang up", button_style="danger",
                                       layout=w.Layout(width="84px"))
        for button in (self.call_button, self.hang_up_button):
            button.add_class("ivrscript-action")
        self.call_button.on_click(self._on_call)
        self.hang_up_button.on_click(self._on_hang_up)
        self.buttons["Call"] = self.call_button
        self.buttons["Hang up"] = self.hang_up_button
        self.status = w.HTML()
        # Built now, shown with the first prompt: an Audio view without a source would log a
        # browser console error. loop=False: ipywidgets' Audio loops by default.
        self.audio = w.Audio(value=b"", format="wav", autoplay=True, loop=False, controls=True,
                             layout=w.Layout(width="260px"))
        self.audio_box = w.Box()
        self.transcript = w.VBox()
        self.log_line = _log_view(app)
        actions = w.HBox([self.call_button, self.hang_up_button],
                         layout=w.Layout(margin="8px 0 0 0", justify_content="space-between"))
        pad = w.VBox([keys, actions], layout=w.Layout(width="max-content", overflow="visible"))
        pad.add_class("ivrscript-card")
        pad.add_class("ivrscript-keypad")
        super().__init__([w.HTML(_STYLE), pad, self.status, self.audio_box, self.transcript,
                          self.log_line], **kwargs)
        self._message = ""
        self._message_for: tuple[Any, bool] = (None, False)  # the state the note is about
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
        if not self.app.running:
            self.refresh("Cannot call: the app is stopped (start it with app.start(), or build "
                         "a new App and a new Keypad).")
            return
        try:
            phone = self.simulator.call(self.app, caller=self.caller)
        except (IvrError, RuntimeError) as error:
            self.refresh(f"Cannot call: {error}")
            return
        with _lock:
            self.phone = phone
            self.keys_pressed = ""
            self.key_groups = []
            self._listens = 0
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
        self._stop_audio()
        self.refresh("")

    def press(self, keys: str) -> None:
        """Click the buttons of ``keys`` in order (what a cell does instead of a finger)."""
        for key in keys:
            self.buttons[key].click()

    # -- updates (any thread) -------------------------------------------------------------

    def _phone_event(self, event: Any) -> None:
        kind = event.kind
        with _lock:
            if kind == "listen":
                self._listens += 1
                self.key_groups.append((self._listens - 1, ""))
            elif kind == "keys":
                if not self.key_groups:  # before the first collect
                    self.key_groups.append((None, ""))
                index, keys = self.key_groups[-1]
                self.key_groups[-1] = (index, keys + event.details)
        if kind == "play":
            self._show_prompt(event.details)
        elif (kind == "played" and event.details != "Completed") or kind in (
                "hangup", "caller-hangup", "forward", "exit"):
            self._stop_audio()  # interrupted, cancelled, or the call is over
        self.refresh()

    def _entered(self, call: Call) -> None:
        pass  # the keypad follows its own call only; "Call" picks it up

    def _finished(self, call: Call) -> None:
        if call is self.call:
            for view in self.transcript.children:
                if isinstance(view, CallView):
                    view.refresh()
            self._stop_audio()
            self.refresh()

    def _stopped(self, app: Any) -> None:
        self._stop_audio()
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
        with _lock:
            _set(self.audio, value=data, format="wav", autoplay=True)
            if not self.audio_box.children:
                _set(self.audio_box, children=(self.audio,))

    def _stop_audio(self) -> None:
        """Stop the prompt playing in the browser: the player gets a moment of silence (and
        no autoplay), so it ends paused."""
        with _lock:
            if self.audio_box.children and self.audio.value != _SILENCE:
                _set(self.audio, autoplay=False, value=_SILENCE, format="wav")

    def refresh(self, message: str | None = None) -> None:
        """Redraw the status line; ``message`` (if given) replaces the note under it, for as
        long as the call's state stays what it was when the note was made."""
        phone = self.phone
        state = (phone, bool(phone is not None and phone.ended))
        if message is not None:
            self._message, self._message_for = message, state
        elif self._message and self._message_for != state:
            self._message = ""  # the note was about a state that is over
        if phone is None:
            line = "Ready: press <b>Call</b> to ring the app."
            if not self.app.running:
                line = f"<b style='color:{_DIM}'>The app is stopped.</b>"
        elif phone.ended:
            line = f"Call ended: <b>{html.escape(str(phone.end_reason))}</b>"
            if phone.forwarded_to:
                line += f" to {html.escape(str(phone.forwarded_to))}"
            if not self.app.running:
                line += f" &middot; <b style='color:{_DIM}'>the app is stopped</b>"
        else:
            playing = phone.playing
            play = (f"&#9654; playing <code>{html.escape(heard(playing, self.call))}</code>"
                    if playing else "nothing playing")
            patterns = phone.collect_patterns
            listen = (f"<b style='color:{_OK}'>&#9679; listening</b> for "
                      f"<code>{html.escape(' '.join(patterns))}</code>"
                      if patterns is not None else f"<span style='color:{_DIM}'>not listening"
                                                   "</span>")
            line = f"{play} &middot; {listen}"
        groups = [(index, keys) for index, keys in self.key_groups if keys]
        if phone is not None and groups:
            shown = " ".join(
                f"<code>{'****' if sensitive_collect(self.call, index) else html.escape(keys)}"
                "</code>" for index, keys in groups)
            line += f" &middot; keys {shown}"
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _silence(seconds: float = 0.05, rate: int = 8000) -> bytes:
    """A short silent WAV (what the player gets to stop a prompt)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


_SILENCE = _silence()


def show_mismatch(error: ReplayMismatch) -> w.HTML:
    """A :class:`ReplayMismatch` as an HTML widget: its summary, then what was recorded and what
    the script issued side by side (differences marked), then the transcript up to there."""
    return w.HTML(mismatch_html(error))


def _local_media(app: Any, uri: str) -> str | None:
    """The local file behind a media URL the app serves, or None."""
    if not app.running:
        return None
    prefix = f"{app.public_url}/{app.secret}/media/"
    if not uri.startswith(prefix):
        return None
    media_id, _, name = uri[len(prefix):].partition("/")
    found = app._media.lookup(media_id, unquote(name))  # the name is quoted in the URL
    return found[0] if found else None
