"""Play: how long media lasts, plays that end, are replaced, interrupted or fail.

Play
  * ``interruptByDtmf`` defaults to true (the 2019 spec), ``repeatCount`` to 1; each
    resource ``uri`` must be an ``http(s)`` URL.
  * Media length: a URI on the host:port of the call's callback URLs (the app serves it) is
    fetched once (cached per URI; failures are not cached) and its WAV header gives the
    length; a non-WAV body counts ``default_media_seconds``; 404, any other non-200 or no
    answer -> the play's update is ``Failed`` when that resource's turn comes (resources
    before it are heard). Other URIs are never fetched: ``default_media_seconds``.
  * A new Play while another plays on the party replaces it: the earlier one ends
    ``Canceled`` (with its update). DELETE of a play that already ended -> 204, nothing else.
  * ``Phone.heard`` gets each resource's URI once per play, as it first starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..scheduler import Timer
from ..wav import wav_seconds
from .common import UPDATE, _origin

if TYPE_CHECKING:
    from .core import Simulator
    from .phone import Phone


@dataclass(eq=False)
class _PlayState:
    command_id: str
    uris: tuple[str, ...]
    seconds: list[float | None]  # media seconds (before speed); None: could not be loaded
    interrupt_by_dtmf: bool
    repeat_count: int
    index: int = 0
    cycle: int = 0
    timer: Timer | None = None


class PlayRules:
    """The Simulator's play rules (a mixin: ``self`` is the Simulator)."""

    def _media_seconds(self: Simulator, phone: Phone, uri: str) -> float | None:
        origin = _origin(uri)
        if origin is None or origin not in phone._origins:
            return self.default_media_seconds
        cached = self._media_cache.get(uri)
        if cached is not None:
            return cached
        head = self._http.media_head(uri)
        if head is None:
            return None
        seconds = wav_seconds(head)
        if seconds is None:
            seconds = self.default_media_seconds
        with self._lock:
            self._media_cache[uri] = seconds
        return seconds

    def _start_play(self: Simulator, phone: Phone, play: _PlayState) -> None:
        if phone._play is not None:
            self._finish_play(phone, phone._play, "Canceled")
        phone._play = play
        phone._play_ids.add(play.command_id)
        self._play_step(phone, play)

    def _play_step(self: Simulator, phone: Phone, play: _PlayState) -> None:
        uri = play.uris[play.index]
        seconds = play.seconds[play.index]
        if seconds is None:
            self._event(phone, "error", f"media could not be loaded: {uri}")
            self._finish_play(phone, play, "Failed")
            return
        phone.playing = uri
        if play.cycle == 0:
            phone.heard.append(uri)
            self._event(phone, "play", uri)
        play.timer = self._scheduler.call_later(seconds / self.speed,
                                                lambda: self._play_tick(phone, play))
        self._changed.notify_all()

    def _play_tick(self: Simulator, phone: Phone, play: _PlayState) -> None:
        with self._changed:
            if phone._play is not play:
                return
            play.index += 1
            if play.index == len(play.uris):
                play.index = 0
                play.cycle += 1
                if play.repeat_count and play.cycle >= play.repeat_count:
                    self._finish_play(phone, play, "Completed")
                    return
                if not play.repeat_count and not any(play.seconds):
                    return  # silent media forever: nothing more to schedule
            self._play_step(phone, play)

    def _finish_play(self: Simulator, phone: Phone, play: _PlayState, status: str) -> None:
        if play.timer is not None:
            play.timer.cancel()
        if phone._play is play:
            phone._play = None
            phone.playing = None
        self._queue(phone, UPDATE, self._body(phone, command="Play", commandId=play.command_id,
                                              partyId=phone.caller_party_id, status=status))
        self._event(phone, "played", status)
        self._changed.notify_all()
