"""Unit tests of the chunk handler, its tokenizer and merger, and its document readers."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson
import pytest

from workers.handlers import chunk, readers, text
from workers.handlers.text import count_tokens, merge_pieces, naive_merge, split_pieces

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "docs"


class Cancelled(Exception):
    pass


class FakeCtx:
    """Records progress; cancels once check_cancel has been called ``cancel_after`` times."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.logger = logging.getLogger("test.chunk")
        self.progress_calls: list[tuple[float, str | None]] = []
        self.checks = 0
        self.cancel_after = cancel_after

    def progress(self, value: float, message: str | None = None) -> None:
        self.progress_calls.append((value, message))
        if self.cancelled():
            raise Cancelled("cancelled during progress")

    def cancelled(self) -> bool:
        return self.cancel_after is not None and self.checks >= self.cancel_after

    def check_cancel(self) -> None:
        self.checks += 1
        if self.cancelled():
            raise Cancelled("cancelled")


def english(sentences: int) -> str:
    return "".join(
        f"Sentence number {i} says that worker {i % 7} handled task {i}. "
        + ("\n" if i % 5 == 4 else "")
        for i in range(sentences)
    )


def read_jsonl(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def run_chunk(tmp_path: Path, doc: Path, ctx: FakeCtx | None = None, **fields) -> dict:
    task = {"path": str(doc), "out": str(tmp_path / "out"), **fields}
    return chunk.run(task, ctx or FakeCtx())


# Tokenizer


def test_count_tokens_latin_runs_and_marks():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("café naïve 3.14") == 5
    assert count_tokens("  \n\t ") == 0
    assert count_tokens("v1.2-beta") == 5


def test_count_tokens_each_cjk_character():
    assert count_tokens("文档处理") == 4
    assert count_tokens("文档，处理。") == 6
    assert count_tokens("こんにちは") == 5
    assert count_tokens("カタカナ") == 4
    assert count_tokens("한국어") == 3
    assert count_tokens("Redis队列abc") == 4


# Splitting


def test_split_keeps_delimiters_and_whitespace_with_the_piece():
    pieces = split_pieces("One. Two!  Three?\n\n第一句。第二句！End")
    assert pieces == ["One. ", "Two!  ", "Three?\n\n", "第一句。", "第二句！", "End\n"]


def test_split_latin_period_only_at_sentence_end():
    pieces = split_pieces("Version 1.2 of example.com is out. See a?b=c now.")
    assert pieces == ["Version 1.2 of example.com is out. ", "See a?b=c now.\n"]


def test_split_closing_quote_stays_with_its_sentence():
    assert split_pieces("他说：“好。”然后走了。") == ["他说：“好。”", "然后走了。\n"]
    assert split_pieces('He said "stop." Then left.') == ['He said "stop." ', "Then left.\n"]


def test_split_custom_and_empty_delimiter():
    assert split_pieces("a|b|c", delimiter="|") == ["a|", "b|", "c\n"]
    assert split_pieces("1,000 apples, 2 pears", delimiter=",") == ["1,000 apples, ", "2 pears\n"]
    assert split_pieces("One. Two.", delimiter="") == ["One. Two.\n"]
    assert "".join(split_pieces("x\ny\n", delimiter="\n")) == "x\ny\n"


# Merging


def test_merge_respects_token_limit():
    chunks = naive_merge(english(400), chunk_token_num=64)
    assert len(chunks) > 20
    assert all(c.tokens <= 64 for c in chunks)
    assert all(c.tokens == count_tokens(c.text) for c in chunks)
    assert sum(c.tokens for c in chunks) == count_tokens(english(400))


def test_merge_exact_counts():
    # Eight sentences of four tokens; three fit in ten tokens, a fourth would not.
    body = "".join(f"Word {i} here. " for i in range(8))
    chunks = naive_merge(body, chunk_token_num=10)
    assert [c.tokens for c in chunks] == [8, 8, 8, 8]
    assert naive_merge(body, chunk_token_num=1000)[0].text == body.strip()


def test_oversized_piece_is_its_own_chunk():
    big = "word " * 50 + ". "
    chunks = naive_merge(f"Small one. {big}Small two.", chunk_token_num=10)
    assert [c.tokens for c in chunks] == [3, 51, 3]


def test_overlap_starts_chunk_with_tail_of_previous():
    body = "".join(f"Alpha{i} beta{i} gamma{i} delta{i}. " for i in range(40))
    plain = naive_merge(body, chunk_token_num=40)
    overlapped = naive_merge(body, chunk_token_num=40, overlap_percent=25)
    assert len(overlapped) > len(plain)
    assert all(c.tokens <= 40 for c in overlapped)
    for previous, current in zip(overlapped, overlapped[1:], strict=False):
        # A quarter of the previous chunk's 40 tokens, cut at a token boundary.
        shared, count = text.tail_tokens(previous.text, previous.tokens * 25 // 100)
        assert count == 10
        assert current.text.startswith(shared)


def test_merge_is_deterministic_and_accepts_sections():
    sections = ["第一节。内容很短。", "Second section. It is short too."]
    first = naive_merge(sections, chunk_token_num=6, overlap_percent=30)
    second = naive_merge(list(sections), chunk_token_num=6, overlap_percent=30)
    assert first == second
    assert first[0].text.startswith("第一节。")


def test_merge_rejects_bad_options():
    with pytest.raises(ValueError, match="chunk_token_num"):
        merge_pieces(["a"], chunk_token_num=0)
    with pytest.raises(ValueError, match="overlap_percent"):
        merge_pieces(["a"], overlap_percent=95)


# Readers


def test_html_strips_tags_scripts_and_entities(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>T</title><style>p{color:red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Head</h1>"
        "<p>One &amp; two<br>three</p><div>Four &lt;5&gt;</div>"
        "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>"
        "</body></html>",
        encoding="utf-8",
    )
    assert readers.read_sections(str(page)) == [
        "T", "Head", "One & two", "three", "Four <5>", "k | v", "a | 1",
    ]  # fmt: skip


def test_json_flattens_to_dotted_paths(tmp_path):
    doc = tmp_path / "d.json"
    doc.write_bytes(orjson.dumps({"a": {"b": 1, "c": [True, {"d": "x"}]}, "e": None, "f": {}}))
    assert readers.read_sections(str(doc)) == [
        "a.b: 1", "a.c[0]: true", "a.c[1].d: x", "e: null", "f: {}",
    ]  # fmt: skip


def test_json_invalid_names_the_path(tmp_path):
    doc = tmp_path / "bad.json"
    doc.write_text('{"a": 1}\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        readers.read_sections(str(doc))


def test_csv_rows_become_header_value_lines(tmp_path):
    doc = tmp_path / "t.csv"
    doc.write_text('name,role,note\nada,worker,"fast, steady"\nbob,,idle\n', encoding="utf-8")
    assert readers.read_sections(str(doc)) == [
        "name: ada; role: worker; note: fast, steady",
        "name: bob; note: idle",
    ]


def test_decoding_bom_latin1_and_binary(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfhello\r\nworld")
    assert readers.read_sections(str(bom)) == ["hello\nworld"]
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes("café".encode("latin-1"))
    assert readers.read_sections(str(legacy)) == ["café"]
    wide = tmp_path / "wide.txt"
    wide.write_bytes("文档\n".encode("utf-16"))
    assert readers.read_sections(str(wide)) == ["文档\n"]
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"PK\x03\x04\x00\x00data")
    with pytest.raises(ValueError, match="binary"):
        readers.read_sections(str(binary))


# Handler


def test_run_writes_jsonl_and_returns_totals(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text(english(300), encoding="utf-8")
    result = run_chunk(tmp_path, doc, chunk_token_num=50)
    lines = read_jsonl(result["output"])
    assert result["output"] == str(tmp_path / "out" / "notes.md.jsonl")
    assert result["chunks"] == len(lines) > 10
    assert result["tokens"] == sum(line["tokens"] for line in lines)
    assert [line["index"] for line in lines] == list(range(len(lines)))
    for line in lines:
        assert set(line) == {"doc", "index", "text", "tokens", "chunk_id"}
        assert line["doc"] == "notes.md"
        assert line["tokens"] == count_tokens(line["text"]) <= 50
        assert line["chunk_id"] == chunk.chunk_id("notes.md", line["text"])
    assert os.listdir(tmp_path / "out") == ["notes.md.jsonl"]


def test_run_is_deterministic(tmp_path):
    doc = EXAMPLES / "pipelines-zh.txt"
    first = read_jsonl(run_chunk(tmp_path / "1", doc, overlap_percent=20)["output"])
    second = read_jsonl(run_chunk(tmp_path / "2", doc, overlap_percent=20)["output"])
    assert len(first) > 10
    assert [c["chunk_id"] for c in first] == [c["chunk_id"] for c in second]
    assert all(c["tokens"] <= 128 for c in first)


def test_name_keeps_folders(tmp_path):
    doc = tmp_path / "x.txt"
    doc.write_text("Hello there.", encoding="utf-8")
    result = run_chunk(tmp_path, doc, name="team/reports/x")
    assert result["output"] == str(tmp_path / "out" / "team" / "reports" / "x.jsonl")
    assert read_jsonl(result["output"])[0]["doc"] == "team/reports/x"


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/etc/passwd", "a/..", ""])
def test_unsafe_names_are_refused(tmp_path, name):
    doc = tmp_path / "x.txt"
    doc.write_text("Hello.", encoding="utf-8")
    with pytest.raises(ValueError, match="'name'"):
        run_chunk(tmp_path, doc, name=name)
    assert not (tmp_path / "out").exists()


def test_unsupported_extension(tmp_path):
    doc = tmp_path / "slides.pdf"
    doc.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"'\.pdf'.*slides\.pdf"):
        run_chunk(tmp_path, doc)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        run_chunk(tmp_path, tmp_path / "nowhere.txt")


def test_too_large_file(tmp_path):
    doc = tmp_path / "big.txt"
    doc.write_bytes(b"a. " * 1000)
    with pytest.raises(ValueError, match=r"big\.txt is 3000 bytes"):
        run_chunk(tmp_path, doc, max_bytes=2999)
    assert run_chunk(tmp_path, doc, max_bytes=3000)["chunks"] > 0


def test_missing_out_and_bad_fields(tmp_path):
    doc = tmp_path / "x.txt"
    doc.write_text("Hello.", encoding="utf-8")
    with pytest.raises(ValueError, match="'out'"):
        chunk.run({"path": str(doc)}, FakeCtx())
    with pytest.raises(ValueError, match="chunk_token_num"):
        run_chunk(tmp_path, doc, chunk_token_num="many")
    with pytest.raises(ValueError, match="overlap_percent"):
        run_chunk(tmp_path, doc, overlap_percent=-1)


def test_cancel_mid_document_leaves_nothing(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(english(5000), encoding="utf-8")
    ctx = FakeCtx(cancel_after=20)
    with pytest.raises(Cancelled):
        run_chunk(tmp_path, doc, ctx)
    assert ctx.checks == 20
    assert os.listdir(tmp_path / "out") == []


def test_cancel_through_progress_leaves_nothing(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(english(2000), encoding="utf-8")

    class CancelOnProgress(FakeCtx):
        def progress(self, value, message=None):
            super().progress(value, message)
            if len(self.progress_calls) == 6:
                raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        run_chunk(tmp_path, doc, CancelOnProgress())
    assert os.listdir(tmp_path / "out") == []


def test_progress_is_monotonic_and_below_one(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(english(3000), encoding="utf-8")
    ctx = FakeCtx()
    run_chunk(tmp_path, doc, ctx)
    values = [value for value, _ in ctx.progress_calls]
    assert len(values) >= 10
    assert values == sorted(values)
    assert all(0 <= v < 1 for v in values)
    messages = [message for _, message in ctx.progress_calls]
    assert messages[0] == "Reading long.txt"
    assert any(m.startswith("Chunked ") and "/" in m for m in messages)


def test_examples_all_chunk(tmp_path):
    docs = sorted(p for p in EXAMPLES.iterdir() if p.is_file())
    assert {p.suffix for p in docs} >= {".txt", ".md", ".html", ".json", ".csv"}
    for doc in docs:
        result = run_chunk(tmp_path, doc)
        assert result["chunks"] > 0, doc.name


def test_one_megabyte_is_fast(tmp_path):
    doc = tmp_path / "mb.txt"
    body = english(200) + "文档处理流水线把原始文件转换为可检索的文本块。" * 50 + "\n"
    doc.write_text(body * (1_000_000 // len(body.encode()) + 1), encoding="utf-8")
    assert doc.stat().st_size >= 1_000_000
    start = time.perf_counter()
    result = run_chunk(tmp_path, doc, overlap_percent=10)
    elapsed = time.perf_counter() - start
    assert result["chunks"] > 1000
    # Generous for slow machines; a quadratic merge would take minutes here.
    assert elapsed < 5, elapsed
