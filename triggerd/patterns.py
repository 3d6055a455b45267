"""Regular expressions and globs matched in time linear in the text (SPEC 4, last paragraph).

Patterns are written by operators but the text they are applied to comes from outside
(webhook bodies, event types), so a pattern must never backtrack: `Regex` runs on RE2,
which refuses what it cannot run in linear time (backreferences, lookaround), and `Glob`
places its literal pieces left to right without ever trying a second placement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

from triggerd.errors import PatternError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr; PatternError says it instead
_SET_MEMORY = 64 << 20

# RE2's message for a construct Python's re has, and what to write instead.
_HINTS = {
    "\\Z": "RE2 spells end of text \\z",
    "(?=": "lookahead is not supported by RE2",
    "(?!": "lookahead is not supported by RE2",
    "(?<=": "lookbehind is not supported by RE2",
    "(?<!": "lookbehind is not supported by RE2",
    "++": "possessive quantifiers are not supported by RE2",
    "*+": "possessive quantifiers are not supported by RE2",
    "?+": "possessive quantifiers are not supported by RE2",
}
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]")


@dataclass(frozen=True, slots=True, eq=False)
class Regex:
    """A regular expression with RE2 semantics: searched anywhere in the text, in linear time."""

    text: str
    _compiled: Any  # a re2 _Regexp; re2 ships no type information

    def search(self, subject: str) -> bool:
        """Whether the expression matches anywhere in subject."""
        # Encoded here rather than by re2, which refuses lone surrogates (JSON admits "\ud800");
        # a bytes subject also spares re2 mapping byte offsets back to characters.
        return self._compiled.search(subject.encode("utf-8", "surrogatepass")) is not None

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=4096)
def compile_regex(text: str) -> Regex:
    """Compile with RE2; raises PatternError saying why RE2 cannot run it (the caller names the pattern)."""
    try:
        # As bytes, so that a lone surrogate (YAML's "\ud800") is RE2's "invalid UTF-8", not a crash.
        compiled = re2.compile(text.encode("utf-8", "surrogatepass"), _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        hint = next((h for construct, h in _HINTS.items() if construct in reason), None)
        if hint is None and _BACKREFERENCE.search(reason):
            hint = "backreferences are not supported by RE2"
        raise PatternError(f"{reason} ({hint})" if hint else reason) from None
    return Regex(text, compiled)


class RegexSet:
    """Several RE2 expressions searched in one pass over the text: which of them match.

    The event index holds every `/regex/` trigger in one set, so an event costs one search
    (about a microsecond for 250 patterns) instead of one per pattern. A set that RE2 cannot
    build within its memory budget is searched one expression at a time instead.
    """

    __slots__ = ("_each", "_set")

    def __init__(self, texts: Sequence[str]) -> None:
        self._each = [compile_regex(text) for text in texts]  # raises PatternError first
        options = re2.Options()
        options.log_errors = False
        # Room for the set's DFA, so that a search never has to give up (SPEC 4: no stalls, no misses).
        options.max_mem = _SET_MEMORY
        self._set: Any = re2.Set.SearchSet(options)
        try:
            for text in texts:
                self._set.Add(text.encode("utf-8", "surrogatepass"))
            self._set.Compile()
        except re2.error:
            self._set = None

    def matching(self, subject: str) -> frozenset[int]:
        """The positions (in the order given) of the expressions that match anywhere in subject."""
        if not self._each:
            return frozenset()
        if self._set is None:
            return frozenset(i for i, regex in enumerate(self._each) if regex.search(subject))
        return frozenset(self._set.Match(subject.encode("utf-8", "surrogatepass")) or ())


@dataclass(frozen=True, slots=True)
class Glob:
    """A glob where `*` matches any run of characters (dots and newlines included) and `?` any one.

    The pattern is split at its stars into pieces of fixed length: the first must sit at the
    start, the last at the end, and each one between goes at its leftmost place after the
    one before. The leftmost place always leaves the most room for the rest, so no other
    placement is ever tried: the time is linear in the text (times a piece's length where
    it holds `?`).
    """

    text: str
    pieces: tuple[_Piece, ...]  # the pattern split at '*'; a single piece: no star at all

    @classmethod
    def parse(cls, text: str) -> Glob:
        return cls(text, tuple(_Piece.parse(piece) for piece in text.split("*")))

    def matches(self, subject: str) -> bool:
        """Whether the whole subject matches the glob."""
        pieces = self.pieces
        if len(pieces) == 1:
            return pieces[0].size == len(subject) and pieces[0].fits(subject, 0)
        first, last = pieces[0], pieces[-1]
        end = len(subject) - last.size
        if end < first.size or not first.fits(subject, 0):
            return False
        position = first.size
        for piece in pieces[1:-1]:
            found = piece.find(subject, position, end)
            if found < 0:
                return False
            position = found + piece.size
        return last.fits(subject, end)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class _Piece:
    """Glob text between stars: a literal, or with `?` a fixed-length regex (no repetition, so no backtracking)."""

    literal: str
    size: int
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str) -> _Piece:
        if "?" not in text:
            return cls(text, len(text), None)
        source = "".join("." if c == "?" else re.escape(c) for c in text)
        return cls(text, len(text), re.compile(source, re.DOTALL))

    def fits(self, subject: str, at: int) -> bool:
        """Whether the piece matches subject at position at."""
        if self.regex is None:
            return subject.startswith(self.literal, at)
        return self.regex.match(subject, at) is not None

    def find(self, subject: str, start: int, end: int) -> int:
        """The leftmost position >= start where the piece matches and ends by end, else -1."""
        if self.regex is None:
            return subject.find(self.literal, start, end)
        found = self.regex.search(subject, start, end)
        return -1 if found is None else found.start()


@lru_cache(maxsize=4096)
def compile_glob(text: str) -> Glob:
    """A glob, parsed once per pattern text."""
    return Glob.parse(text)
