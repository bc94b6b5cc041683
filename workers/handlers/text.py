"""Tokenizer, delimiter splitting and token-bounded merging of text into chunks (no I/O).

Tokens. ``count_tokens`` is deterministic and needs no model: a run of ASCII or Latin letters and
digits (``A-Z a-z 0-9``, Latin-1 and Latin Extended letters, combining accents) is one token; every
other non-space character is one token on its own. That makes each CJK character (Han, Hiragana,
Katakana, Hangul, CJK and full-width punctuation) one token, as well as each punctuation mark;
whitespace is no token.

Delimiters. ``delimiter`` is a string of single characters, each ending a piece. The default,
``DEFAULT_DELIMITER = "\\n.!?;。；！？"``, ends a piece at a newline, at the Latin sentence marks
``. ! ? ;`` and at the CJK marks ``。；！？``. The Latin prose marks ``. ! ? ; : ,``, when given
as delimiters, end a piece only where they end a sentence or clause, that is where whitespace or
the end of the text follows (after optional closing quotes or brackets), so ``3.14``, ``v1.2``,
``example.com``, ``10:30`` and ``a?b=c`` stay whole. Every other delimiter (newline, CJK
punctuation, ``|``, ``#`` or any character you pass) ends a piece wherever it occurs, because CJK
text puts no space after its sentence marks. A piece keeps its delimiter together with the closing
quotes and whitespace that follow it; an empty ``delimiter`` leaves each section as one piece.

Merging follows RAGFlow's ``naive_merge``: pieces are appended in order to the current chunk, and a
new chunk starts when the next piece would take it past ``chunk_token_num``; a piece larger than the
limit becomes a chunk of its own. With ``overlap_percent`` above zero a new chunk starts with the
last tokens of the previous chunk, about that percentage of its tokens, trimmed so that the new
chunk still fits the limit together with its first piece.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

DEFAULT_DELIMITER = "\n.!?;。；！？"
DEFAULT_CHUNK_TOKEN_NUM = 128
MAX_OVERLAP_PERCENT = 90

# Latin-1 letters without the signs × and ÷, Latin Extended-A/B and Additional, combining accents.
_LATIN_RUN = r"[0-9A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0300-\u036f\u1e00-\u1eff]+"
_TOKEN = re.compile(f"{_LATIN_RUN}|\\S")
# Closing quotes and brackets belong to the sentence they close, not to the next piece.
_CLOSERS = "\"')]}”’」』）】》〉"
_CLOSER_CLASS = f"[{re.escape(_CLOSERS)}]"
# These marks also sit inside numbers, times, versions and URLs, where no space follows them.
_PROSE_MARKS = ".!?;:,"


class Chunk(NamedTuple):
    """One merged chunk: its text (surrounding whitespace stripped) and its token count."""

    text: str
    tokens: int


def count_tokens(text: str) -> int:
    """Return the number of tokens in ``text`` by the rule in the module docstring."""
    return len(_TOKEN.findall(text))


def tail_tokens(text: str, n: int) -> tuple[str, int]:
    """Return the end of ``text`` that starts at its ``n``-th last token, and that token count."""
    if n <= 0:
        return "", 0
    starts = [m.start() for m in _TOKEN.finditer(text)]
    if not starts:
        return "", 0
    n = min(n, len(starts))
    return text[starts[-n] :], n


@lru_cache(maxsize=64)
def _terminator(delimiter: str) -> re.Pattern[str] | None:
    unique = "".join(dict.fromkeys(delimiter))
    anywhere = "".join(c for c in unique if c not in _PROSE_MARKS)
    sentence_end = "".join(c for c in unique if c in _PROSE_MARKS)
    alternatives = []
    if anywhere:
        alternatives.append(f"[{re.escape(anywhere)}]")
    if sentence_end:
        alternatives.append(f"[{re.escape(sentence_end)}]+(?={_CLOSER_CLASS}*(?:\\s|\\Z))")
    if not alternatives:
        return None
    return re.compile(f"(?:(?:{'|'.join(alternatives)}){_CLOSER_CLASS}*\\s*)+")


def iter_pieces(text: str, delimiter: str = DEFAULT_DELIMITER) -> Iterator[str]:
    """Yield the pieces of one section, each ending with its delimiter.

    Leading whitespace of the section is dropped. The last piece always ends with a newline, so
    pieces taken from consecutive sections never run together into one token.
    """
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return
    pattern = _terminator(delimiter)
    if pattern is not None:
        for match in pattern.finditer(text, start):
            end = match.end()
            if end == len(text):
                break
            yield text[start:end]
            start = end
    last = text[start:]
    yield last if last.endswith("\n") else last + "\n"


def split_pieces(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """Return the pieces of one section as a list (see ``iter_pieces``)."""
    return list(iter_pieces(text, delimiter))


class ChunkMerger:
    """Merge pieces, fed one at a time, into chunks of at most ``chunk_token_num`` tokens.

    Feeding pieces one by one lets the caller check for cancellation and report progress between
    them and write each chunk as soon as it is complete.
    """

    def __init__(
        self, chunk_token_num: int = DEFAULT_CHUNK_TOKEN_NUM, overlap_percent: float = 0
    ) -> None:
        if isinstance(chunk_token_num, bool) or not isinstance(chunk_token_num, int):
            raise ValueError(f"chunk_token_num must be an integer, got {chunk_token_num!r}")
        if chunk_token_num < 1:
            raise ValueError(f"chunk_token_num must be at least 1, got {chunk_token_num}")
        if isinstance(overlap_percent, bool) or not isinstance(overlap_percent, (int, float)):
            raise ValueError(f"overlap_percent must be a number, got {overlap_percent!r}")
        if not 0 <= overlap_percent <= MAX_OVERLAP_PERCENT:
            raise ValueError(
                f"overlap_percent must be between 0 and {MAX_OVERLAP_PERCENT}, "
                f"got {overlap_percent}"
            )
        self.chunk_token_num = chunk_token_num
        self.overlap_percent = overlap_percent
        # Parts are joined once per chunk: appending to one string would copy it for every piece.
        self._parts: list[str] = []
        self._tokens = 0

    def add(self, piece: str, tokens: int) -> Chunk | None:
        """Add a piece of ``tokens`` tokens; return the chunk it completed, if any."""
        completed = None
        if self._parts and self._tokens + tokens > self.chunk_token_num:
            raw = "".join(self._parts)
            completed = self._chunk(raw)
            self._start_after(raw, self._tokens, tokens)
        self._parts.append(piece)
        self._tokens += tokens
        return completed

    def finish(self) -> Chunk | None:
        """Return the last, incomplete chunk, if any, and reset the merger."""
        if not self._parts:
            return None
        chunk = self._chunk("".join(self._parts))
        self._parts, self._tokens = [], 0
        return chunk

    @staticmethod
    def _chunk(raw: str) -> Chunk:
        # Recounted because joining pieces can only merge tokens, so the running sum is an
        # upper bound rather than the exact count.
        text = raw.strip()
        return Chunk(text, count_tokens(text))

    def _start_after(self, previous: str, previous_tokens: int, next_tokens: int) -> None:
        self._parts, self._tokens = [], 0
        if self.overlap_percent <= 0:
            return
        wanted = int(previous_tokens * self.overlap_percent / 100)
        room = self.chunk_token_num - next_tokens
        tail, count = tail_tokens(previous, min(wanted, room))
        if tail:
            self._parts.append(tail)
            self._tokens = count


def merge_pieces(
    pieces: Iterable[str],
    chunk_token_num: int = DEFAULT_CHUNK_TOKEN_NUM,
    overlap_percent: float = 0,
) -> list[Chunk]:
    """Merge ``pieces`` in order into chunks (see ``ChunkMerger``)."""
    merger = ChunkMerger(chunk_token_num, overlap_percent)
    chunks = []
    for piece in pieces:
        chunk = merger.add(piece, count_tokens(piece))
        if chunk is not None:
            chunks.append(chunk)
    last = merger.finish()
    if last is not None:
        chunks.append(last)
    return chunks


def naive_merge(
    sections: str | Iterable[str],
    chunk_token_num: int = DEFAULT_CHUNK_TOKEN_NUM,
    delimiter: str = DEFAULT_DELIMITER,
    overlap_percent: float = 0,
) -> list[Chunk]:
    """Split each section at ``delimiter`` and merge all pieces into chunks, like RAGFlow."""
    if isinstance(sections, str):
        sections = [sections]
    pieces = (piece for section in sections for piece in iter_pieces(section, delimiter))
    return merge_pieces(pieces, chunk_token_num, overlap_percent)
