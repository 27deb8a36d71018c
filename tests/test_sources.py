"""bertjax.data.sources on tiny files written here: exact documents, sentences and counts.

References are independent of the code under test: documents and counts written out
by hand, Python's own `bytes.decode("utf-8", "replace")` with a counting error handler
for invalid UTF-8, and tensorflow-datasets' own builder for the TFDS source.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import json
import random
import time
import tracemalloc

import pytest

from bertjax.data import demo_corpus as demo_corpus_lib
from bertjax.data import sources
from bertjax.data.source_base import MAX_DOCUMENT_CHARS, SourceStats
from bertjax.data.sources import demo_corpus, open_source
from bertjax.data.text import MAX_LINE_CHARS, MAX_WORD_CHARS, clean_text, split_sentences


def read(spec: str) -> tuple[list[list[str]], dict[str, int]]:
    src = open_source(spec)
    docs = list(src.documents())
    return docs, dataclasses.asdict(src.stats)


def counts(**kw: int) -> dict[str, int]:
    """SourceStats as a dict: the given counts, zero elsewhere."""
    return {**dataclasses.asdict(SourceStats()), **kw}


def nbytes(docs: list[list[str]]) -> int:
    return sum(len(s.encode()) for d in docs for s in d)


# ---------------------------------------------------------------- formats


def test_bert_format_documents_and_counts(tmp_path):
    (tmp_path / "a.txt").write_bytes(
        b"The first sentence.\n"
        b"The second sentence.\r\n"  # CRLF
        b"\n"
        b"   \t \n"  # whitespace-only: still one separator
        b"  Doc two,   spaced out.  \n"
        b"\n\n\n"
        b"Doc three without final newline."
    )
    (tmp_path / "b.txt").write_bytes(b"Next file starts a new document.\n\n")
    docs, stats = read(f"bert:{tmp_path}/*.txt")
    assert docs == [
        ["The first sentence.", "The second sentence."],
        ["Doc two, spaced out."],
        ["Doc three without final newline."],
        ["Next file starts a new document."],
    ]
    assert stats == counts(documents=4, sentences=5, bytes=nbytes(docs), files=2)


def test_bert_format_lines_are_sentences_as_given(tmp_path):
    # BERT format is already one sentence per line: never re-split.
    (tmp_path / "a.txt").write_text("One. Two! Three?\nfour\n")
    docs, _ = read(f"bert:{tmp_path / 'a.txt'}")
    assert docs == [["One. Two! Three?", "four"]]


def test_text_format_paragraphs_and_sentences(tmp_path):
    (tmp_path / "a.txt").write_text(
        "It was a bright cold day in April. The clocks were\n"
        'striking thirteen! Was it? "Yes," he said. 3 cats came.\n'
        "\n"
        "Dr. Smith met J. R. Tolkien, e.g. at 10.30 a.m. on Monday.\n"
        "\n\n"
        "No final punctuation here\n"
    )
    docs, stats = read(f"text:{tmp_path / 'a.txt'}")
    assert docs == [
        [
            "It was a bright cold day in April.",
            "The clocks were striking thirteen!",
            "Was it?",
            '"Yes," he said.',
            "3 cats came.",
        ],
        ["Dr. Smith met J. R. Tolkien, e.g. at 10.30 a.m. on Monday."],
        ["No final punctuation here"],
    ]
    assert stats == counts(documents=3, sentences=7, bytes=nbytes(docs), files=1)


def test_split_sentences_rule():
    text = "An ox. Cats do! Every fig? 4 goats. hi there. \u201cJo\u201d knew."
    assert split_sentences(text) == [
        "An ox.",
        "Cats do!",
        "Every fig?",
        "4 goats. hi there.",
        "\u201cJo\u201d knew.",
    ]
    # A one-letter word before the period is an initial: no boundary.
    assert split_sentences("Plan B. Then what. And C. D.") == ["Plan B. Then what.", "And C. D."]
    assert split_sentences('He said "Stop." Then left.') == ['He said "Stop."', "Then left."]
    assert split_sentences("Mr. Brown and Mrs. Green, cf. Fig. 3.") == [
        "Mr. Brown and Mrs. Green, cf. Fig. 3."
    ]
    assert split_sentences("") == []


def test_jsonl_field_and_bad_records(tmp_path):
    lines = [
        json.dumps({"text": "Para one. Second sentence!\n\nPara two\nsame paragraph.", "id": 1}),
        "",  # blank lines are ignored, not bad
        "{not json",
        json.dumps({"body": "no text field"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"text": 5}),
        json.dumps({"text": None}),
        json.dumps({"text": "  \n\n "}),  # empty document
        json.dumps({"text": "Ctrl\u0000 and bad \ud800 surrogate."}),
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    docs, stats = read(f"jsonl:{tmp_path / 'a.jsonl'}#text")
    assert docs == [
        ["Para one.", "Second sentence!", "Para two same paragraph."],
        ["Ctrl and bad \ufffd surrogate."],
    ]
    assert stats == counts(
        documents=2,
        sentences=4,
        bytes=nbytes(docs),
        empty_documents=1,
        bad_records=5,
        control_chars=1,
        invalid_utf8=1,
        files=1,
    )
    # Another field, and "text" by default.
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "Body text.", "text": "Other."}))
    assert read(f"jsonl:{tmp_path / 'b.jsonl'}#body")[0] == [["Body text."]]
    assert read(f"jsonl:{tmp_path / 'b.jsonl'}")[0] == [["Other."]]


def test_compressed_and_directory_inputs(tmp_path):
    (tmp_path / "d").mkdir()
    with gzip.open(tmp_path / "d" / "b.txt.gz", "wt") as f:
        f.write("Zipped doc.\n")
    (tmp_path / "d" / "a.txt").write_text("Plain doc.\n")
    docs, stats = read(f"bert:{tmp_path / 'd'}")  # a directory: all files, sorted
    assert docs == [["Plain doc."], ["Zipped doc."]]
    assert stats["files"] == 2


# ---------------------------------------------------------------- bad input


def count_replaced(data: bytes) -> tuple[str, int]:
    """Python's errors="replace" decoding, and how many bytes it replaced."""
    n = 0

    def handler(e: UnicodeDecodeError) -> tuple[str, int]:
        nonlocal n
        n += e.end - e.start
        return "\ufffd", e.end

    codecs.register_error("test_sources_count", handler)
    return data.decode("utf-8", "test_sources_count"), n


def test_invalid_utf8_matches_python_replace(tmp_path):
    rng = random.Random(0)
    for trial in range(200):
        # Valid text with random bytes (often invalid UTF-8) spliced in.
        data = bytearray("héllo wörld 中文 \U0001f600 ok".encode())
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        data = bytes(data)
        ref, n = count_replaced(data)
        stats = SourceStats()
        # Control characters and whitespace are cleaned after decoding, as the reference is.
        expect = " ".join(clean_text(ref, SourceStats()).split())
        assert clean_text(data, stats) == expect, (trial, data)
        assert stats.invalid_utf8 == n, (trial, data)
    # Through a file, with a multi-byte character split across read boundaries.
    blob = b"Bad \xff\xfe bytes \xe4\xb8 here.\n\nOk \xe4\xb8\xad.\n"
    (tmp_path / "a.txt").write_bytes(blob)
    docs, stats = read(f"text:{tmp_path / 'a.txt'}")
    assert docs == [["Bad \ufffd\ufffd bytes \ufffd here."], ["Ok \u4e2d."]]
    assert stats["invalid_utf8"] == 4 == count_replaced(blob)[1]


def test_control_characters_removed_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(
        b"Nul\x00 byte and bell\x07 here.\n"
        b"Esc\x1b[0m code, DEL\x7f and C1 \xc2\x85next.\n"  # U+0085 is a C1 control
        b"\x00\x01\x02\n"  # nothing left: the line is dropped
        b"Tab\tstays whitespace.\n"
    )
    docs, stats = read(f"bert:{tmp_path / 'a.txt'}")
    assert docs == [
        [
            "Nul byte and bell here.",
            "Esc[0m code, DEL and C1 next.",
            "Tab stays whitespace.",
        ]
    ]
    assert stats["control_chars"] == 2 + 3 + 3


def test_ten_megabyte_line_is_split_in_bounded_memory(tmp_path):
    line = " ".join(f"w{i % 997}" for i in range(2_000_000))  # ~10 MB, no sentence end
    (tmp_path / "a.txt").write_text("Before it.\n" + line + "\nAfter it.\n")
    expect = hashlib.sha256(f"Before it. {line} After it. ".encode()).hexdigest()
    del line
    for kind in ("bert", "text"):
        src = open_source(f"{kind}:{tmp_path / 'a.txt'}")
        if kind == "bert":
            tracemalloc.start()
        digest = hashlib.sha256()
        for doc in src.documents():
            assert all(0 < len(s) <= MAX_LINE_CHARS for s in doc)
            assert sum(map(len, doc)) <= MAX_DOCUMENT_CHARS
            digest.update("".join(s + " " for s in doc).encode())
        if kind == "bert":
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            # A document of <= 1M characters at a time, never the whole 10 MB line.
            assert peak < 16 << 20, peak
        # No character lost and no word cut: the pieces were cut at spaces.
        assert digest.hexdigest() == expect
        assert src.stats.long_lines_split == 1
        assert src.stats.long_documents_split == 1  # 10 MB > MAX_DOCUMENT_CHARS
        assert src.stats.long_words_split == 0
        assert src.stats.documents == 10 or src.stats.documents == 11
    # Text format: the line has no sentence end, so its sentence is split too (once).
    assert src.stats.long_sentences_split == 1


def test_ten_megabyte_word(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 10_000_000)
    docs, stats = read(f"bert:{tmp_path / 'a.txt'}")
    pieces = [w for d in docs for s in d for w in s.split()]
    assert "".join(pieces) == "x" * 10_000_000
    assert all(len(p) <= MAX_WORD_CHARS for p in pieces)
    assert all(len(s) <= MAX_LINE_CHARS for d in docs for s in d)
    assert stats["long_lines_split"] == 1 and stats["long_sentences_split"] == 0


def test_long_words_split(tmp_path):
    word = "".join(chr(ord("a") + i % 26) for i in range(300))
    (tmp_path / "a.txt").write_text(f"A {word} word and {'y' * 100} ok.\n")
    docs, stats = read(f"bert:{tmp_path / 'a.txt'}")
    assert docs == [[f"A {word[:100]} {word[100:200]} {word[200:]} word and {'y' * 100} ok."]]
    assert stats["long_words_split"] == 1  # a 100-character word is not over the limit


def test_empty_documents_skipped_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\x00\n\nReal doc.\n\n\x01 \x02\n\n\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n\n \n")
    for kind in ("bert", "text"):
        docs, stats = read(f"{kind}:{tmp_path}/*.txt")
        assert docs == [["Real doc."]]
        assert stats == counts(
            documents=1, sentences=1, bytes=9, empty_documents=2, control_chars=3, files=3
        )


def test_one_document_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("Only one sentence in the whole corpus.")
    for kind in ("bert", "text"):
        docs, stats = read(f"{kind}:{tmp_path / 'a.txt'}")
        assert docs == [["Only one sentence in the whole corpus."]]
        assert stats == counts(documents=1, sentences=1, bytes=38, files=1)


def test_deterministic_and_stats_reset(tmp_path):
    rng = random.Random(1)
    for i in range(3):
        text = "".join(
            rng.choice(["Word ", "other ", ". ", "\n", "\n\n", "é ", "\x00", "Z! "])
            for _ in range(3000)
        )
        (tmp_path / f"{i}.txt").write_text(text)
    src = open_source(f"text:{tmp_path}/*.txt")
    first = list(src.documents())
    stats = dataclasses.asdict(src.stats)
    assert list(src.documents()) == first  # a second pass restarts from the beginning
    assert dataclasses.asdict(src.stats) == stats  # and counts from zero again
    assert list(open_source(f"text:{tmp_path}/*.txt").documents()) == first
    assert stats["documents"] == len(first) > 10


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("nope:x", ValueError, ["nope:x", "unknown kind"]),
        ("justtext", ValueError, ["justtext"]),
        ("bert:", ValueError, ["bert:"]),
        ("text:/no/such/dir/*.txt", FileNotFoundError, ["text:/no/such/dir/*.txt"]),
        ("jsonl:/no/such.jsonl#f", FileNotFoundError, ["/no/such.jsonl"]),
        ("tfds:name:train#", ValueError, ["tfds:name:train#"]),
    ],
)
def test_bad_specs_fail_in_one_line(spec, error, words):
    with pytest.raises(error) as e:
        open_source(spec)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_tfds_spec_parsing():
    parse = sources._parse_tfds
    assert parse("s", "wikipedia/20230601.en") == ("wikipedia/20230601.en", "train", "text")
    assert parse("s", "wikipedia/20230601.en:validation#title") == (
        "wikipedia/20230601.en",
        "validation",
        "title",
    )
    assert parse("s", "c4/en:3.1.0") == ("c4/en:3.1.0", "train", "text")
    assert parse("s", "c4/en:3.1.0:train[:1%]#text") == ("c4/en:3.1.0", "train[:1%]", "text")
    assert parse("s", "bookcorpus:train[10:20]") == ("bookcorpus", "train[10:20]", "text")


# ---------------------------------------------------------------- TFDS


@pytest.fixture(scope="module")
def tfds_builder():
    """A tiny text dataset built by tensorflow-datasets itself (no network)."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class BertjaxTinyCorpus(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        TEXTS = {
            "train": [
                "First doc. Second sentence!",
                "Para one.\n\nPara two\nwraps.",
                "Bad\x00 ctrl.",
                "   ",
                "Last doc.",
            ],
            "validation": ["Held out."],
        }

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"text": tfds.features.Text(), "title": tfds.features.Text()}
                ),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(t) for split, t in self.TEXTS.items()}

        def _generate_examples(self, texts):
            for i, t in enumerate(texts):
                yield i, {"text": t, "title": f"Title {i}."}

    return tfds, BertjaxTinyCorpus


def test_tfds_source(tfds_builder, tmp_path):
    tfds, _ = tfds_builder
    src = open_source("tfds:bertjax_tiny_corpus", tfds_data_dir=str(tmp_path))
    docs = list(src.documents())
    # TFDS orders examples by a hash of their keys when preparing: compare as sets,
    # and check that the order is the same on every read.
    assert sorted(docs) == sorted(
        [
            ["First doc.", "Second sentence!"],
            ["Para one.", "Para two wraps."],
            ["Bad ctrl."],
            ["Last doc."],
        ]
    )
    assert dataclasses.asdict(src.stats) == counts(
        documents=4, sentences=6, bytes=nbytes(docs), empty_documents=1, control_chars=1
    )
    assert list(src.documents()) == docs
    val = open_source("tfds:bertjax_tiny_corpus:validation#title", tfds_data_dir=str(tmp_path))
    assert list(val.documents()) == [["Title 0."]]
    with pytest.raises(ValueError, match="no feature 'body'"):
        open_source("tfds:bertjax_tiny_corpus#body", tfds_data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot read split 'nope'"):
        list(open_source("tfds:bertjax_tiny_corpus:nope", tfds_data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        open_source("tfds:no_such_dataset_xyz")


def test_tfds_real_dataset_name_with_mock_data(tfds_builder):
    """wikipedia/20230601.en by name, its examples mocked by tfds.testing.mock_data."""
    tfds, _ = tfds_builder
    import tensorflow as tf

    texts = ["Alan Turing was a mathematician. He was born in 1912.", "", "Short."]

    def as_dataset(self, split, **kwargs):
        del kwargs
        assert split == "train"
        return tf.data.Dataset.from_tensor_slices({"text": texts, "title": ["a", "b", "c"]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        src = open_source("tfds:wikipedia/20230601.en:train#text")
        docs = list(src.documents())
    assert docs == [["Alan Turing was a mathematician.", "He was born in 1912."], ["Short."]]
    assert src.stats.empty_documents == 1


# ---------------------------------------------------------------- demo corpus


def test_demo_corpus():
    start = time.perf_counter()
    src = open_source("demo")
    n_docs, first, longest = 0, [], 0
    for doc in src.documents():
        n_docs += 1
        if len(first) < 300:
            first.append(doc)
        longest = max(longest, max(map(len, doc)))
    elapsed = time.perf_counter() - start
    stats = src.stats
    assert stats.bytes >= 4 << 20 and stats.documents == n_docs >= 1000, stats
    assert stats.sentences > 2 * n_docs and longest <= MAX_LINE_CHARS
    # Cleaned prose: no empty sentence, no control character, no doubled space.
    for doc in first:
        for s in doc:
            assert s and s == " ".join(s.split()) and s.isprintable(), s
    # Deterministic: the same documents in the same order on another read.
    assert demo_head(len(first)) == first
    # The thin wrapper init.py uses: strings, capped by max_bytes and min_chars.
    texts = list(demo_corpus(max_bytes=200_000, min_chars=200))
    assert all(isinstance(t, str) and len(t) >= 200 for t in texts)
    assert 200_000 <= sum(len(t.encode()) for t in texts) < 200_000 + 100_000
    print(
        f"demo corpus: {stats.documents} documents, {stats.sentences} sentences, "
        f"{stats.bytes / 2**20:.1f} MiB, {stats.files} files, {elapsed:.1f}s"
    )


def demo_head(n: int) -> list[list[str]]:
    out = []
    for doc in open_source("demo").documents():
        out.append(doc)
        if len(out) == n:
            return out
    return out


def test_demo_docstrings_are_found_without_importing(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        '#!/usr/bin/env python\n# comment with """quotes"""\n'
        '"""Module doc. It has two sentences."""\n'
        "import os\n"
        "X = '''not a docstring'''\n"
        "def f(a,\n      b):  # a comment\n"
        "    r'''Raw \\d doc.'''\n"
        '    s = """inside code"""\n'
        "class C:\n"
        "    # comment\n"
        '    """Class doc with \\""" escaped quote."""\n'
        '    if True:\n        """Not a docstring either."""\n'
        "raise SystemExit('importing this file would exit')\n"
    )
    assert list(demo_corpus_lib.docstrings(str(src))) == [
        "Module doc. It has two sentences.",
        "Raw \\d doc.",
        'Class doc with """ escaped quote.',
    ]
