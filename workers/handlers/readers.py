"""Turn a document file into text sections, chosen by its extension.

``.txt``, ``.md`` and ``.markdown`` give the whole text as one section. ``.html``/``.htm`` give
one section per line of visible text: tags are stripped, ``script``/``style`` (and ``noscript``,
``template``) are skipped, block tags become line breaks and entities are unescaped. ``.json``
gives one ``dotted.path: value`` line per leaf (list items as ``path[0]``). ``.csv`` gives one
``header: value; header: value`` line per row, the first row naming the columns.

Bytes are decoded as UTF-8 (a BOM is honoured, UTF-16 too when it carries one); content with NUL
bytes is refused as binary, and text that is not valid UTF-8 is read as Latin-1 so that legacy
files still parse.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import json
import os
import re
from collections.abc import Callable
from html.parser import HTMLParser

import orjson

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2",
        "h3", "h4", "h5", "h6", "head", "header", "hr", "html", "li", "main", "nav", "ol", "p",
        "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "title", "tr", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
_SPACES = re.compile(r"\s+")


def decode_text(data: bytes, path: str) -> str:
    """Decode a document's bytes to text with newlines normalised to ``\\n``."""
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    elif b"\x00" in data:
        raise ValueError(f"{path} looks like binary content (it contains NUL bytes)")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    if "\x00" in text:
        raise ValueError(f"{path} looks like binary content (it contains NUL characters)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole file, refusing one larger than ``max_bytes``."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "Document not found", path) from None
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes, larger than max_bytes={max_bytes}")
    with open(path, "rb") as f:
        # Read one byte past the bound so a file that grew after stat() is still refused.
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is over {max_bytes} bytes, larger than max_bytes={max_bytes}")
    return data


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._pre = 0
        self._cells_in_row = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A self-closing tag has no content, so it must not leave a skip or pre level open.
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        self.parts.append(data if self._pre else _SPACES.sub(" ", data))

    def _open(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "pre":
            self._pre += 1
        elif tag == "tr":
            self._cells_in_row = 0
        elif tag in _CELL_TAGS:
            # Cells of a row stay on one line, so a table row reads as one record.
            if self._cells_in_row:
                self.parts.append(" | ")
            self._cells_in_row += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")


def html_sections(text: str) -> list[str]:
    """Return the visible lines of an HTML document."""
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    return [line.strip() for line in lines if line.strip()]


def _json_scalar(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _load_json(text: str, path: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    # The standard parser is slower but takes what orjson refuses, such as integers past 64 bits.
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def json_sections(text: str, path: str = "<json>") -> list[str]:
    """Return one ``dotted.path: value`` line per leaf of a JSON document, in document order."""
    root = _load_json(text, path)
    lines: list[str] = []
    # An explicit stack instead of recursion: nesting depth is the document's to choose.
    stack: list[tuple[str, object]] = [("", root)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict) and value:
            items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
        elif isinstance(value, list) and value:
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            scalar = _json_scalar(value)
            lines.append(f"{key}: {scalar}" if key else scalar)
            continue
        stack.extend(reversed(items))
    return lines


def csv_sections(text: str, path: str = "<csv>") -> list[str]:
    """Return one ``header: value; header: value`` line per data row of a CSV document."""
    sample = text[:65536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise ValueError(f"{path} is not valid CSV: {exc}") from None
    if not rows:
        return []
    headers = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    lines = []
    for row in rows[1:]:
        cells = []
        for i, cell in enumerate(row):
            value = cell.strip()
            if value:
                header = headers[i] if i < len(headers) else f"column {i + 1}"
                cells.append(f"{header}: {value}")
        if cells:
            lines.append("; ".join(cells))
    return lines


def _plain_sections(text: str, path: str) -> list[str]:
    return [text]


def _html(text: str, path: str) -> list[str]:
    return html_sections(text)


_READERS: dict[str, Callable[[str, str], list[str]]] = {
    ".txt": _plain_sections,
    ".md": _plain_sections,
    ".markdown": _plain_sections,
    ".html": _html,
    ".htm": _html,
    ".json": json_sections,
    ".csv": csv_sections,
}
SUPPORTED_EXTENSIONS = tuple(_READERS)


def read_sections(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Read the document at ``path`` and return its text sections."""
    extension = os.path.splitext(path)[1].lower()
    reader = _READERS.get(extension)
    if reader is None:
        raise ValueError(
            f"Unsupported document extension {extension or '(none)'!r} for {path}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    text = decode_text(read_bytes(path, max_bytes), path)
    return reader(text, path)
