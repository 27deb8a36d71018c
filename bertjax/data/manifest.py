"""DATA/manifest.json: what a prepared data directory holds, read once per phase.

`prepare data` (prepare.py) and `prepare import-google` (google_records.py) write it
last, so a directory without it is unfinished. It names the shards of each split with
their example and token counts, sizes and sha256, the settings they were made with
(`settings_key`: a digest of those that decide the bytes), the tokenizer under
DATA/tokenizer (kind, vocab_size, special ids, sha256 of tokenizer.json), the masking
("static": masks stored in the shards; "dynamic": the pipeline masks), and what the
run read and repaired (source_stats, input_stats, instance_stats, vocab_check).

`Manifest.read(data_dir)` loads and checks it (one-line DataFormatError naming the
file); the pipeline, the pretraining tasks and `bench data` take the `Manifest`
instead of reading the file again. A Manifest is a read-only mapping over the parsed
JSON, with accessors for what its readers use.

DATA may be a gs:// URL: the manifest, the shard listing and the tokenizer are then read
through bertjax.paths (one listing checks every shard's size; the tokenizer is loaded
from a temporary local copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.data.records import DataFormatError
from bertjax.data.shard_files import write_atomic
from bertjax.errors import one_line

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "bertjax-data"
VERSION = 1
SPLITS = ("train", "validation")
RECORD_FORMATS = ("bertjax", "google")
# What a manifest says about the preparation run rather than the data: `prepare data`
# run again over finished data (or with other workers) rewrites these and nothing else.
_RUN_ONLY = {
    "input_stats": ("shards_reused", "shards_written"),
    "settings": ("num_workers", "max_inflight_mb"),
}
_REQUIRED = ("settings", "tokenizer", "masking", "splits", "source_stats", "vocab_check")


@dataclasses.dataclass(frozen=True, eq=False)
class Manifest(Mapping[str, Any]):
    """A data directory's manifest: `data_dir` and the parsed JSON (`raw`).

    Equal to another Manifest (or dict) with the same contents, wherever it lies.
    """

    data_dir: str
    raw: dict[str, Any]

    # ------------------------------------------------------------------ reading

    @classmethod
    def read(cls, data_dir: str, verify_checksums: bool = False) -> Manifest:
        """Loads DATA/manifest.json and `validate`s it.

        Raises:
          DataFormatError: one line naming the file and what is wrong.
        """
        path = paths.join(data_dir, MANIFEST)
        if not paths.isfile(path):
            raise DataFormatError(
                f"{path}: not found (prepare the data first: python -m bertjax prepare data)"
            )
        try:
            raw = json.loads(paths.read_bytes(path).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataFormatError(f"{path}: not valid JSON ({' '.join(str(e).split())})") from e
        manifest = cls(data_dir, raw)
        manifest.validate(verify_checksums)
        return manifest

    def validate(self, verify_checksums: bool = False) -> None:
        """Checks the format, version and required keys, that every shard file exists
        with the recorded size (and, with verify_checksums, sha256), that counts add
        up, and what the pipeline relies on (ids, lengths, record format).

        Raises:
          DataFormatError: one line naming the file and what is wrong.
        """
        try:
            self._check_layout(verify_checksums)
            self._check_readable()
        except (TypeError, AttributeError, KeyError) as e:  # wrong JSON types
            raise DataFormatError(f"{self.path}: malformed ({one_line(e)})") from None

    def _fail(self, what: str) -> DataFormatError:
        return DataFormatError(f"{self.path}: {what}")

    def _check_layout(self, verify_checksums: bool) -> None:
        m = self.raw
        if not isinstance(m, dict):
            raise self._fail("expected a JSON object")
        if m.get("format") != FORMAT:
            raise self._fail(f"format is {m.get('format')!r}, expected {FORMAT!r}")
        if m.get("version") != VERSION:
            raise self._fail(f"version {m.get('version')!r} is not supported (expected {VERSION})")
        for key in _REQUIRED:
            if key not in m:
                raise self._fail(f"missing key {key!r}")
        if m["masking"] not in ("static", "dynamic"):
            raise self._fail(f"masking is {m['masking']!r}, expected 'static' or 'dynamic'")
        tok = m["tokenizer"]
        if not isinstance(tok, dict) or not isinstance(tok.get("vocab_size"), int):
            raise self._fail("tokenizer.vocab_size is missing")
        settings = m["settings"]
        if not isinstance(settings, dict) or not isinstance(settings.get("max_seq_length"), int):
            raise self._fail("settings.max_seq_length is missing")
        splits = m["splits"]
        if not isinstance(splits, dict) or "train" not in splits:
            raise self._fail("splits.train is missing")
        # On an object store one listing gives every shard's size.
        listed = paths.sizes(self.data_dir) if paths.is_remote(self.data_dir) else None
        for split, info in splits.items():
            self._check_split(split, info, verify_checksums, listed)

    def _check_split(
        self, split: str, info: Any, verify_checksums: bool, listed: dict[str, int] | None
    ) -> None:
        if split not in SPLITS:
            raise self._fail(f"unknown split {split!r}")
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            raise self._fail(f"splits.{split}.shards is missing")
        for key in ("examples", "tokens"):
            total = sum(s.get(key, 0) for s in shards if isinstance(s, dict))
            if info.get(key) != total:
                raise self._fail(
                    f"splits.{split}.{key}={info.get(key)!r} but its shards add up to {total}"
                )
        for s in shards:
            if not isinstance(s, dict) or not isinstance(s.get("file"), str):
                raise self._fail(f"splits.{split}: a shard entry lacks 'file'")
            if os.path.basename(s["file"]) != s["file"]:
                raise self._fail(f"shard file {s['file']!r} must be a plain file name")
            shard_path = paths.join(self.data_dir, s["file"])
            if listed is not None:
                size = listed.get(s["file"])
                if size is None:
                    raise self._fail(f"shard {s['file']} is missing")
                if "bytes" in s and size != s["bytes"]:
                    raise self._fail(f"shard {s['file']} has {size} bytes, expected {s['bytes']}")
                if verify_checksums and paths.sha256(shard_path) != s.get("sha256"):
                    raise self._fail(f"shard {s['file']} does not match its sha256")
                continue
            if not os.path.isfile(shard_path):
                raise self._fail(f"shard {s['file']} is missing")
            if "bytes" in s and os.path.getsize(shard_path) != s["bytes"]:
                size = os.path.getsize(shard_path)
                raise self._fail(f"shard {s['file']} has {size} bytes, expected {s['bytes']}")
            if verify_checksums and paths.sha256(shard_path) != s.get("sha256"):
                raise self._fail(f"shard {s['file']} does not match its sha256")

    def _check_readable(self) -> None:
        """What the pipeline relies on beyond the layout."""
        if not _is_int(self.vocab_size, 1):
            raise self._fail("tokenizer.vocab_size must be a positive integer")
        if not _is_int(self.settings["max_seq_length"], 2):
            raise self._fail("settings.max_seq_length must be an integer >= 2")
        if self.record_format not in RECORD_FORMATS:
            raise self._fail(
                f"settings.record_format is {self.record_format!r}, expected one "
                f"of {', '.join(RECORD_FORMATS)}"
            )
        predictions = self.setting("max_predictions_per_seq")
        if self.record_format == "google" and (
            self.masking != "static" or not _is_int(predictions, 1)
        ):
            raise self._fail(
                "Google-format shards must be statically masked, with "
                "settings.max_predictions_per_seq"
            )
        for name, split in self.splits.items():
            for i, shard in enumerate(split["shards"]):
                if not shard["file"]:
                    raise self._fail(f"splits.{name}.shards[{i}].file is empty")
                if not _is_int(shard.get("examples"), 0):
                    raise self._fail(f"splits.{name}.shards[{i}].examples must be an integer >= 0")

    # ------------------------------------------------------------------ accessors

    @property
    def path(self) -> str:
        return paths.join(self.data_dir, MANIFEST)

    @property
    def tokenizer_dir(self) -> str:
        return paths.join(self.data_dir, TOKENIZER_DIR)

    @property
    def settings(self) -> dict[str, Any]:
        return self.raw["settings"]

    @property
    def splits(self) -> dict[str, Any]:
        return self.raw["splits"]

    @property
    def masking(self) -> str:
        """ "static" (masks stored in the shards) or "dynamic" (the pipeline masks)."""
        return self.raw["masking"]

    @property
    def vocab_size(self) -> int:
        return self.raw["tokenizer"]["vocab_size"]

    @property
    def max_seq_length(self) -> int:
        return int(self.setting("max_seq_length"))

    @property
    def record_format(self) -> str:
        return self.settings.get("record_format", "bertjax")

    def setting(self, key: str) -> Any:
        """settings[key], also looked up one level down (e.g. settings.masking.key)."""
        settings = self.settings
        if key in settings:
            return settings[key]
        for value in settings.values():
            if isinstance(value, Mapping) and key in value:
                return value[key]
        return None

    def shards(self, split: str) -> list[dict[str, Any]]:
        """The split's shard entries; DataFormatError naming the splits there are."""
        if split not in self.splits:
            raise self._fail(f"no split {split!r}; it has {', '.join(sorted(self.splits))}")
        return self.splits[split]["shards"]

    def load_tokenizer(self) -> Any:
        """DATA/tokenizer, checked against the manifest: present, the same tokenizer.json
        (sha256) and vocab_size; DataFormatError naming the file otherwise. On an object
        store it is read from a temporary local copy (a few small files)."""
        from bertjax.data.tokenizers import load_tokenizer

        tok_dir = self.tokenizer_dir
        if not paths.isdir(tok_dir):
            raise DataFormatError(f"{tok_dir}: tokenizer directory is missing")
        expected = self.raw["tokenizer"].get("sha256")
        tok_json = paths.join(tok_dir, "tokenizer.json")
        with paths.local_copy(tok_dir) as local:
            local_json = os.path.join(local, "tokenizer.json")
            if expected and os.path.isfile(local_json) and paths.sha256(local_json) != expected:
                raise DataFormatError(
                    f"{tok_json}: sha256 differs from {self.path}; the "
                    "tokenizer changed after the data was prepared"
                )
            tokenizer = load_tokenizer(local)
        if tokenizer.vocab_size != self.vocab_size:
            raise DataFormatError(
                f"{tok_dir}: vocab_size {tokenizer.vocab_size} differs from "
                f"{self.path}'s {self.vocab_size}"
            )
        return tokenizer

    def digest(self) -> str:
        """sha256 of the manifest without its run-only entries (_RUN_ONLY): the prepared
        data's identity (shard names, sizes and digests, settings, tokenizer), wherever
        the directory lies and however often `prepare data` ran over it."""
        m = dict(self.raw)
        for section, keys in _RUN_ONLY.items():
            if isinstance(m.get(section), dict):
                m[section] = {k: v for k, v in m[section].items() if k not in keys}
        return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ writing

    def write(self, data_dir: str | None = None) -> None:
        """Writes DATA/manifest.json (`data_dir`, default the manifest's own) whole or
        not at all (on an object store: one object upload)."""
        path = paths.join(self.data_dir if data_dir is None else data_dir, MANIFEST)
        text = json.dumps(self.raw, indent=2, sort_keys=True, default=_json_default) + "\n"
        if paths.is_remote(path):
            paths.write_bytes(path, text.encode())
        else:
            write_atomic(path, text.encode())

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Manifest({self.data_dir!r})"


def save_tokenizer(tokenizer: Any, out_dir: str) -> dict[str, Any]:
    """Writes DATA/tokenizer (kept as is when identical: resume); returns the manifest's
    "tokenizer" entry: what it is, its hash and special ids."""
    final = os.path.join(out_dir, TOKENIZER_DIR)
    tmp = os.path.join(out_dir, f".tokenizer.tmp-{uuid.uuid4().hex[:8]}")
    tokenizer.save(tmp)

    def contents(d: str) -> dict[str, bytes]:
        out = {}
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out

    if os.path.isdir(final) and contents(final) == contents(tmp):
        shutil.rmtree(tmp)
    else:
        paths.replace_directory(tmp, final)
    sha256 = paths.sha256(os.path.join(final, "tokenizer.json"))
    return {
        "kind": tokenizer.kind,
        "class": tokenizer.tokenizer_class,
        "vocab_size": tokenizer.vocab_size,
        "sha256": sha256,
        "dir": TOKENIZER_DIR,
        "cls_id": tokenizer.cls_id,
        "sep_id": tokenizer.sep_id,
        "pad_id": tokenizer.pad_id,
        "mask_id": tokenizer.mask_id,
    }


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
