"""The data side's limits: `prepare data`'s memory bound on hostile corpora
(data.max_inflight_mb, docs/data.md#memory), and input that is mostly not text
(data.max_bad_fraction).

References: the summed RSS of the process tree read from /proc while `prepare data`
runs in a subprocess; counts of bad bytes the corpora were built with.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from clilib import BERTJAX, bertjax, start

from bertjax.data import chunks as chunks_lib
from bertjax.data import prepare as prep
from bertjax.data import shard_examples, sources
from bertjax.data.prepare_settings import PrepareSettings
from bertjax.data.source_base import NotTextError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20
LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------- hostile corpora


def _words(rng: random.Random, n: int) -> list[str]:
    """n words drawn from 5,000 random ones (2-10 letters)."""
    vocab = ["".join(rng.choices(LETTERS, k=rng.randint(2, 10))) for _ in range(5000)]
    return rng.choices(vocab, k=n)


def _sentences(rng: random.Random, n: int, words: int = 12) -> list[str]:
    ws = _words(rng, n * words)
    return [" ".join(ws[i : i + words]).capitalize() + "." for i in range(0, len(ws), words)]


def hostile_corpus(
    directory: str, total_mb: float, tiny_docs: int | None = None, seed: int = 0
) -> list[str]:
    """Writes text files of about `total_mb` MB that are hard on preparation's memory,
    after the tester's 54 MB corpus (issue 26); returns their paths:

      a_long_line.txt   one line (45%): words, no newline, no sentence end
      b_huge_docs.txt   two documents (15% each) of 80-character lines, no blank line and
                        no sentence break
      c_tiny_docs.txt   `tiny_docs` one-word documents (default: a tenth of the total)
      d_long_words.txt  lines that are one 100,000-letter word (10%)
      e_dense.txt       punctuation runs and CJK: a token per character (10%)
    """
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    size = int(total_mb * MB)
    out = []

    def write(name: str, text: str) -> None:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        out.append(path)

    write("a_long_line.txt", " ".join(_words(rng, size // 10))[: size * 45 // 100])
    docs = []
    for _ in range(2):
        words = _words(rng, size * 15 // 100 // 7)
        docs.append("\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)))
    write("b_huge_docs.txt", "\n\n".join(docs) + "\n")
    n_tiny = size // 10 // 8 if tiny_docs is None else tiny_docs
    write("c_tiny_docs.txt", "".join(f"{w}\n\n" for w in _words(rng, n_tiny)))
    write(
        "d_long_words.txt",
        "".join(
            "".join(rng.choices(LETTERS, k=100_000)) + "\n"
            for _ in range(max(1, size // 10 // 100_000))
        ),
    )
    dense = "!#$%&*+,-/:;<=>@^_|~" + "".join(chr(0x4E00 + i) for i in range(200))
    write(
        "e_dense.txt",
        "".join("".join(rng.choices(dense, k=79)) + "\n" for _ in range(size // 10 // 120)),
    )
    return out


# ---------------------------------------------------------------- process-tree RSS


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


def _peak_rss(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Runs `python -m bertjax ARGS`, sampling its process tree's summed RSS every
    10 ms; (the finished process, the peak in bytes)."""
    p = start([*BERTJAX, *args])
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(p.pid))
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = p.communicate(timeout=600)
    done.set()
    t.join()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), peak[0]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> str:
    """A small WordPiece tokenizer directory (letters, CJK and punctuation in it)."""
    from bertjax.data.tokenizers import train_wordpiece

    texts = _sentences(random.Random(1), 2000)
    texts.append("!#$%&*+,-/:;<=>@^_|~ " + " ".join(chr(0x4E00 + i) for i in range(200)))
    path = str(tmp_path_factory.mktemp("vocab") / "tok")
    train_wordpiece(texts, vocab_size=600).save(path)
    return path


# ---------------------------------------------------------------- memory bound


def _largest_chunk(spec: str, config) -> tuple[int, int]:
    """(the largest charge (chunks.chunk_memory), the largest size) of the chunks
    `prepare data` makes of `spec` under `config` (the same chunking, replayed here)."""
    settings = {
        "masking": config.data.masking,
        "dupe_factor": config.data.dupe_factor,
        "max_seq_length": config.max_seq_length,
    }
    documents = iter(sources.open_source(spec).documents())
    charges, sizes = zip(
        *(
            (chunks_lib.chunk_memory(chunk, settings), chunk.nbytes)
            for chunk, _ in chunks_lib.read_chunks(
                documents, config.data.docs_per_shard, chunks_lib.InputStats(), lambda: None
            )
        ),
        strict=True,
    )
    return max(charges), max(sizes)


def test_prepare_peak_memory_stays_within_the_documented_bound(vocab, tmp_path):
    """docs/data.md#memory: peak (summed RSS of the main process and the workers) <=
    idle + max(data.max_inflight_mb, the largest chunk's charge) + a chunk waiting for
    room (at most 8 MB of text and one document).
    `idle` is the same command's peak on a small ordinary corpus (the processes, their
    tokenizers, their buffers); the hostile corpus (4 MB: a 1.8 MB line, 0.6 MB documents
    without a sentence break, 10,000 one-word documents, 100,000-letter words, a token
    per character) must stay within that. Before the bound was enforced the tester's
    54 MB corpus peaked at 1.77 GB with max_inflight_mb=256 (benchmarks/RESULTS.md)."""
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import pretrain

    config = pretrain.get_config("bert_tiny,runlocal")
    files = hostile_corpus(str(tmp_path / "hostile"), 4.0, tiny_docs=10_000)
    normal = tmp_path / "normal.txt"
    normal.write_text("\n\n".join(_sentences(random.Random(2), 3000, 10)) + "\n")
    budget_mb = 64
    common = [
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.tokenizer.path={vocab}",
        "--config.model.vocab_size=600",
        "--config.data.num_workers=2",
        f"--config.data.max_inflight_mb={budget_mb}",
    ]
    r, idle = _peak_rss(
        [
            *common,
            f"--config.data.source=text:{normal}",
            f"--config.data.dir={tmp_path / 'normal_data'}",
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    spec = f"text:{tmp_path / 'hostile'}/*.txt"
    r, peak = _peak_rss(
        [*common, f"--config.data.source={spec}", f"--config.data.dir={tmp_path / 'hostile_data'}"]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "hostile_data" / "manifest.json").read_text())
    assert manifest["source_stats"]["long_lines_split"] >= 1
    assert manifest["source_stats"]["long_words_split"] >= 1
    assert manifest["source_stats"]["files"] == len(files)
    largest, reading = _largest_chunk(spec, config)  # reading: a chunk waiting for room
    bound = idle + max(budget_mb * MB, largest) + reading
    print(
        f"idle {idle / MB:.0f} MB, hostile {peak / MB:.0f} MB, bound {bound / MB:.0f} MB "
        f"(largest chunk charged {largest / MB:.0f} MB)"
    )
    assert peak <= bound, (
        f"peak {peak / MB:.0f} MB > bound {bound / MB:.0f} MB (idle "
        f"{idle / MB:.0f} MB, largest chunk {largest / MB:.0f} MB)"
    )


def test_a_chunk_ends_at_max_chunk_bytes(monkeypatch, tmp_path, vocab):
    """Chunks are cut by text size too, so one worker never holds docs_per_shard huge
    documents; below the limit they are docs_per_shard documents, as before."""
    from bertjax.data.tokenizers import load_tokenizer

    monkeypatch.setattr(chunks_lib, "MAX_CHUNK_BYTES", 2000)
    docs = [[s] for s in _sentences(random.Random(3), 12, 60)]  # ~400 bytes each
    m = prep.prepare(
        docs,
        load_tokenizer(vocab),
        str(tmp_path / "d"),
        PrepareSettings(instances="nsp", max_seq_length=32, docs_per_shard=100, num_workers=0),
        progress=False,
    )
    sizes = [s["documents"] for s in m["splits"]["train"]["shards"]]
    assert sum(sizes) == 12 and max(sizes) < 12 and len(sizes) > 1
    assert all(n >= 2000 // 500 for n in sizes[:-1])


def test_packed_chunk_gives_the_documents_back():
    docs = [
        ["Hello world.", "Zweite Zeile — ünïcode ✓"],
        ["\ud800 lone surrogate"],
        ["a" * 70_000],
        ["日本語の文。", "😀 emoji"],
    ]
    chunk = chunks_lib.PackedChunk()
    for d in docs:
        chunk.add([s.encode("utf-8", "surrogatepass") for s in d])
    assert list(chunk.documents()) == docs
    assert len(chunk) == 4
    assert chunk.nbytes == len(chunk.text) + 8 * (6 + 4)


def test_columns_keep_ids_beyond_uint16():
    """Ids are stored as uint16 only when they fit (a 250,000-token vocabulary does not)."""
    ids = np.array([2, 70_000, 249_999, 3], np.int32)
    passes = [
        {
            "ids": shard_examples._compact(ids),
            "ids_counts": np.array([4]),
            "types": np.zeros(4, np.int8),
            "types_counts": np.array([4]),
            "labels": np.array([-1]),
        },
        {
            "ids": shard_examples._compact(ids[:2] % 1000),
            "ids_counts": np.array([2]),
            "types": np.zeros(2, np.int8),
            "types_counts": np.array([2]),
            "labels": np.array([-1]),
        },
    ]
    assert passes[0]["ids"].dtype == np.int32 and passes[1]["ids"].dtype == np.uint16
    cols = shard_examples.Columns(passes)
    values, counts = cols.features(np.array([1, 0]))["input_ids"]
    np.testing.assert_array_equal(values, [2, 0, 2, 70_000, 249_999, 3])
    np.testing.assert_array_equal(counts, [2, 4])


# ---------------------------------------------------------------- input that is not text


def _mostly_text(path: str, n_bytes: int, bad_share: float, seed: int = 0) -> int:
    """Writes English-like prose with `bad_share` of its bytes replaced by undecodable
    bytes (0xff); returns how many."""
    rng = random.Random(seed)
    lines = []
    for sentence in _sentences(rng, n_bytes // 60 + 1):
        lines.append(sentence)
        if rng.random() < 0.2:
            lines.append("")
    data = bytearray(("\n".join(lines) + "\n").encode()[:n_bytes])
    where = rng.sample(range(len(data)), int(bad_share * len(data)))
    for i in where:
        data[i] = 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))
    return len(where)


def test_random_bytes_are_refused_in_one_line(tmp_path):
    """2 MB of random bytes made 21,198 training examples with exit 0 (issue 26)."""
    path = tmp_path / "random.bin"
    path.write_bytes(random.Random(0).randbytes(2 * MB))
    out = tmp_path / "data"
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.data.source=text:{path}",
        f"--config.data.dir={out}",
    )
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == r.stderr.splitlines()[-1], r.stderr[-3000:]
    assert errors[0].startswith(f"error: {path}: not text: "), errors[0]
    assert "more than data.max_bad_fraction=0.1 allows" in errors[0]
    assert errors[0].endswith("; nothing written")
    counts = [int(n.replace(",", "")) for n in __import__("re").findall(r"\(([\d,]+)\)", errors[0])]
    assert len(counts) == 3 and counts[0] > 0 and counts[1] > 0  # invalid, control, U+FFFD
    assert not out.exists()


def test_a_bad_file_after_written_shards_leaves_nothing(tmp_path, vocab):
    """The refusal can come after shards of earlier files were written (a tokenizer is
    given, chunks of one document): the data directory it created is removed."""
    good, bad = tmp_path / "src" / "a.txt", tmp_path / "src" / "b.bin"
    good.parent.mkdir()
    _mostly_text(str(good), 20_000, 0.0)
    bad.write_bytes(random.Random(1).randbytes(300_000))
    out = tmp_path / "data"
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.data.source=text:{good.parent}",
        f"--config.data.dir={out}",
        f"--config.tokenizer.path={vocab}",
        "--config.model.vocab_size=600",
        "--config.data.docs_per_shard=1",
        "--config.data.num_workers=0",
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.splitlines()[-1].startswith(f"error: {bad}: not text: ")
    assert not out.exists()


def test_a_few_bad_bytes_pass_without_a_warning(tmp_path, vocab):
    """0.1% undecodable bytes: replaced and counted, as before; no warning."""
    path = tmp_path / "corpus.txt"
    n_bad = _mostly_text(str(path), 200_000, 0.001)
    out = tmp_path / "data"
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.data.source=text:{path}",
        f"--config.data.dir={out}",
        f"--config.tokenizer.path={vocab}",
        "--config.model.vocab_size=600",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning" not in r.stderr and "not text" not in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["source_stats"]["invalid_utf8"] == n_bad
    assert m["splits"]["train"]["examples"] > 0


def test_a_borderline_file_is_used_with_a_warning_and_its_counts(tmp_path, vocab):
    """3% undecodable bytes (Latin-1 prose read as UTF-8 looks like this): used, and
    reported once (the tokenizer pass and the preparation pass read it twice)."""
    path = tmp_path / "latin1ish.txt"
    n_bad = _mostly_text(str(path), 200_000, 0.03)
    out = tmp_path / "data"
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.data.source=text:{path}",
        f"--config.data.dir={out}",
        "--config.tokenizer.vocab_size=600",
        "--config.model.vocab_size=600",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.stderr[-3000:]
    assert warnings[0].startswith(f"warning: {path}: {n_bad:,} of ")
    assert f"invalid UTF-8 ({n_bad:,}), control characters (0) or U+FFFD (0)" in warnings[0]
    assert (out / "manifest.json").exists()


def test_many_small_binary_files_are_refused_together(tmp_path):
    """Files too small to judge alone (< 1,000 characters) are judged as a whole."""
    rng = random.Random(4)
    for i in range(40):
        (tmp_path / f"blob{i:02d}.bin").write_bytes(rng.randbytes(600))
    spec = f"bert:{tmp_path}"
    with pytest.raises(NotTextError, match=rf"^{spec}: not text: "):
        list(sources.open_source(spec).documents())
    docs = list(sources.open_source(spec, max_bad_fraction=1.0).documents())  # accepts all
    assert docs


def test_the_check_stops_early_on_a_large_binary_file(tmp_path):
    """A binary file is refused after its first 64K characters, not read to the end."""
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(5).randbytes(8 * MB))
    src = sources.open_source(f"text:{path}")
    with pytest.raises(NotTextError, match=r"of the first [\d,]+ characters"):
        list(src.documents())
    assert src.stats.chars < MB


def test_the_limit_is_checked():
    with pytest.raises(ValueError, match="data.max_bad_fraction=-0.5 must be >= 0"):
        sources.open_source("text:/nonexistent", max_bad_fraction=-0.5)
