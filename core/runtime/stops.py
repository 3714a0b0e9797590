"""Stop strings over streamed text: emit what is safe now, hold back what might begin a stop string.

As OpenAI does, neither the stop string nor anything after it is ever emitted. Generation stops at the
first stop string to be *completed*: the one ending earliest in the text (the longest, if several end
together). That is the only rule a generator that halts at once can follow, since the text after a
completed stop string is never produced; it differs from "the earliest start" only when one stop
string contains another (stops "bc" and "abcd" on "abcd": "bc" completes first, so "a" is emitted).
"""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    def __init__(self, stop_strings: Iterable[str] = ()) -> None:
        # An empty stop string would match before any text: ignored, rather than ending every request.
        self.stops = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._prefixes = {s[:i] for s in self.stops for i in range(1, len(s))}
        self._longest_prefix = max(map(len, self.stops), default=1) - 1
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, once one has

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def push(self, chunk: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string has completed). After a stop, pushes emit ""."""
        if self.stopped:
            return "", True
        text = self._held + chunk
        # The held text has no complete stop string and every occurrence that began in text already
        # emitted would still be held, so searching `text` finds the first stop string to complete.
        hits = [(i + len(s), i, s) for s in self.stops if (i := text.find(s)) >= 0]
        if hits:
            _, start, self.matched = min(hits, key=lambda h: (h[0], h[1]))
            self._held = ""
            return text[:start], True
        # Hold back the longest suffix that a later chunk could complete into a stop string.
        keep = next(
            (n for n in range(min(self._longest_prefix, len(text)), 0, -1) if text[-n:] in self._prefixes), 0
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back text, at the end of generation (no stop string can complete any more)."""
        held, self._held = self._held, ""
        return held
