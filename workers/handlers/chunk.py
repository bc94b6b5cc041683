"""The ``chunk`` handler: split one document into token-bounded chunks written as JSON lines.

Task fields: ``path`` (the document), ``out`` (output folder, required), ``name`` (document name,
default the file's basename; may hold ``/`` for sub-folders, never absolute or ``..``),
``delimiter`` (default ``text.DEFAULT_DELIMITER``, see ``workers.handlers.text``),
``chunk_token_num`` (default 128), ``overlap_percent`` (default 0, at most 90) and ``max_bytes``
(default 64 MiB). The chunks go to ``{out}/{name}.jsonl``, one object per line with ``doc``,
``index``, ``text``, ``tokens`` and ``chunk_id`` (blake2b-128 of ``doc + "\\0" + text``). The
file appears only when every chunk is written, so a cancelled or failed task leaves none behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from typing import IO, Any

import orjson

from workers.handlers.readers import DEFAULT_MAX_BYTES, read_sections
from workers.handlers.text import (
    DEFAULT_CHUNK_TOKEN_NUM,
    DEFAULT_DELIMITER,
    Chunk,
    ChunkMerger,
    count_tokens,
    iter_pieces,
)

# Cancellation is checked this often (in pieces); a piece takes microseconds to merge.
CANCEL_CHECK_EVERY = 50
PROGRESS_STEPS = 10
_READ_DONE = 0.05
_SPLIT_DONE = 0.1
_MERGE_DONE = 0.95
_WRITTEN = 0.99


@dataclass(frozen=True)
class ChunkOptions:
    """The validated fields of one ``chunk`` task."""

    path: str
    out: str
    name: str
    delimiter: str = DEFAULT_DELIMITER
    chunk_token_num: int = DEFAULT_CHUNK_TOKEN_NUM
    overlap_percent: float = 0
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def output(self) -> str:
        return os.path.join(self.out, self.name + ".jsonl")


def _required_str(task: dict, field: str) -> str:
    value = task.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"task field {field!r} is required and must be a non-empty string")
    return value


def check_name(name: object) -> str:
    """Return ``name`` if it is a safe relative document name, else raise ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task field 'name' must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"task field 'name' must not contain NUL: {name!r}")
    if posixpath.isabs(name) or os.path.isabs(name):
        raise ValueError(f"task field 'name' must be relative, got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"task field 'name' must not contain a '..' component: {name!r}")
    if parts[-1] in ("", "."):
        raise ValueError(f"task field 'name' must end with a file name: {name!r}")
    return name


def parse_options(task: dict) -> ChunkOptions:
    """Validate a ``chunk`` task's fields, naming the field at fault in any ValueError."""
    path = _required_str(task, "path")
    out = _required_str(task, "out")
    name = check_name(task["name"] if task.get("name") is not None else os.path.basename(path))
    delimiter = task.get("delimiter", DEFAULT_DELIMITER)
    if not isinstance(delimiter, str):
        raise ValueError(f"task field 'delimiter' must be a string, got {delimiter!r}")
    max_bytes = task.get("max_bytes", DEFAULT_MAX_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"task field 'max_bytes' must be a positive integer, got {max_bytes!r}")
    options = ChunkOptions(
        path=path,
        out=out,
        name=name,
        delimiter=delimiter,
        chunk_token_num=task.get("chunk_token_num", DEFAULT_CHUNK_TOKEN_NUM),
        overlap_percent=task.get("overlap_percent", 0),
        max_bytes=max_bytes,
    )
    # The merger owns the rules for these two; building one validates them.
    ChunkMerger(options.chunk_token_num, options.overlap_percent)
    return options


def chunk_id(doc: str, text: str) -> str:
    """Return the stable id of a chunk: blake2b-128 hex of ``doc + "\\0" + text``."""
    return hashlib.blake2b(f"{doc}\0{text}".encode(), digest_size=16).hexdigest()


def _split(sections: list[str], delimiter: str, ctx: Any) -> list[str]:
    pieces: list[str] = []
    for section in sections:
        for piece in iter_pieces(section, delimiter):
            pieces.append(piece)
            if len(pieces) % (CANCEL_CHECK_EVERY * 20) == 0:
                ctx.check_cancel()
        ctx.check_cancel()
    return pieces


class _Writer:
    """Number chunks and write them as JSON lines, keeping the totals for the result."""

    def __init__(self, f: IO[bytes], doc: str) -> None:
        self._f = f
        self._doc = doc
        self.chunks = 0
        self.tokens = 0

    def write(self, chunk: Chunk | None) -> None:
        if chunk is None or not chunk.text:
            return
        line = {
            "doc": self._doc,
            "index": self.chunks,
            "text": chunk.text,
            "tokens": chunk.tokens,
            "chunk_id": chunk_id(self._doc, chunk.text),
        }
        self._f.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        self.chunks += 1
        self.tokens += chunk.tokens


def _merge_into(writer: _Writer, pieces: list[str], options: ChunkOptions, ctx: Any) -> None:
    merger = ChunkMerger(options.chunk_token_num, options.overlap_percent)
    total = len(pieces)
    step = max(1, -(-total // PROGRESS_STEPS))
    span = _MERGE_DONE - _SPLIT_DONE
    for i, piece in enumerate(pieces):
        if i % CANCEL_CHECK_EVERY == 0:
            ctx.check_cancel()
        if i and i % step == 0:
            ctx.progress(_SPLIT_DONE + span * i / total, f"Chunked {i}/{total} pieces")
        writer.write(merger.add(piece, count_tokens(piece)))
    writer.write(merger.finish())
    ctx.progress(_MERGE_DONE, f"Chunked {total}/{total} pieces")


def _write_chunks(pieces: list[str], options: ChunkOptions, ctx: Any) -> _Writer:
    output = options.output
    folder, base = os.path.split(output)
    os.makedirs(folder or ".", exist_ok=True)
    # Same folder as the output, so the final rename is atomic and never crosses filesystems.
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{base}.", suffix=".tmp")
    try:
        # mkstemp makes the file private; the published chunks are as readable as any output.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            writer = _Writer(f, options.name)
            _merge_into(writer, pieces, options, ctx)
            f.flush()
            os.fsync(f.fileno())
        ctx.check_cancel()
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return writer


def run(task: dict, ctx: Any) -> dict:
    """Chunk the document ``task["path"]`` into ``{out}/{name}.jsonl`` and return the totals."""
    options = parse_options(task)
    ctx.progress(0.01, f"Reading {options.name}")
    sections = read_sections(options.path, options.max_bytes)
    ctx.progress(_READ_DONE, f"Read {len(sections)} sections from {options.name}")
    pieces = _split(sections, options.delimiter, ctx)
    ctx.progress(_SPLIT_DONE, f"Split {options.name} into {len(pieces)} pieces")
    writer = _write_chunks(pieces, options, ctx)
    ctx.progress(_WRITTEN, f"Wrote {writer.chunks} chunks to {options.output}")
    ctx.logger.info(
        "Chunked %s into %d chunks of %d tokens in all, written to %s.",
        options.path,
        writer.chunks,
        writer.tokens,
        options.output,
    )
    return {"chunks": writer.chunks, "tokens": writer.tokens, "output": options.output}
