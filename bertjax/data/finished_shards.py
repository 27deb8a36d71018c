"""Finished shards: found again by a re-run (`Resume`), and given their final names
when every chunk is done (`publish`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from bertjax import paths
from bertjax.data import instances as instances_lib
from bertjax.data.shard_files import PARTS, SHARD_RE, shard_name


class Resume:
    """Finds finished shards of earlier runs that the current chunk would reproduce: in
    DATA/.shards (an interrupted run) or under their final names (a finished one,
    listed by the previous manifest), with the same chunk text, settings and sha256.

    What is there is listed once (this run writes only shards not found). On an object
    store a shard counts as finished by what was published: its metadata object (written
    after its upload; the object it names, or the final name it was moved to) or the
    previous manifest (dropped before any shard is moved: `publish`), and an object of
    the recorded size. Its sha256 is not read back (that would download every shard);
    the pipeline checks it.
    """

    def __init__(self, out_dir: str, parts_dir: str, settings_key: str) -> None:
        self.out_dir, self.parts_dir, self.key = out_dir, parts_dir, settings_key
        self.remote = paths.is_remote(out_dir)
        self.previous: dict[tuple[str, int], dict] = {}
        for path in (
            paths.join(parts_dir, "previous-manifest.json"),
            paths.join(out_dir, "manifest.json"),
        ):
            try:
                m = json.loads(paths.read_bytes(path))
                if m.get("settings_key") != settings_key:
                    continue
                for split, info in m.get("splits", {}).items():
                    for k, shard in enumerate(info.get("shards", [])):
                        self.previous[(split, k)] = shard
            except (OSError, ValueError, AttributeError, TypeError):
                continue
        self.parts = paths.sizes(parts_dir)  # name -> bytes
        self.final = paths.sizes(out_dir)

    def find(self, split: str, k: int, input_sha256: str) -> dict | None:
        """The metadata of a finished shard k of `split` for this chunk text, or None."""
        base = f"{split}-{k:05d}"
        metas = []
        if base + ".json" in self.parts:
            try:
                metas.append(
                    json.loads(paths.read_bytes(paths.join(self.parts_dir, base + ".json")))
                )
            except (OSError, ValueError):
                pass
        if (split, k) in self.previous:
            metas.append(self.previous[(split, k)])
        final = re.compile(rf"^{base}-of-[0-9]{{5}}\.tfrecord$")
        name = base + ".tfrecord"
        files = [(paths.join(self.parts_dir, name), self.parts.get(name))]
        files += [
            (paths.join(self.out_dir, name), size)
            for name, size in sorted(self.final.items())
            if final.match(name)
        ]
        for meta in metas:
            if meta.get("input_sha256") != input_sha256:
                continue
            if meta.get("settings_key", self.key) != self.key:
                continue
            own = paths.basename(str(meta.get("file", "")))  # an object store's upload
            uploaded = (
                [(paths.join(self.parts_dir, own), self.parts[own])]
                if (self.remote and own.startswith(base + "-") and own in self.parts)
                else []
            )
            for path, size in uploaded + files:
                if size is not None and size == meta.get("bytes"):
                    if self.remote or paths.sha256(path) == meta.get("sha256"):
                        return {**meta, "file": path}
        return None


def publish(
    out_dir: str, metas: list[dict], splits: Sequence[str]
) -> tuple[dict[str, dict], instances_lib.InstanceStats, int]:
    """Renames the finished shards to SPLIT-NNNNN-of-MMMMM.tfrecord and removes those of
    an earlier, different run. Returns the manifest's "splits" (the train split always;
    another one when it has shards), the summed instance stats and the examples the
    check dropped. On an object store a rename is a copy and a delete (paths.move); a
    run interrupted between the two finds the shard under either name again, by its
    metadata object, and the previous manifest, which no longer describes the final
    names once one is replaced, is removed first."""
    remote = paths.is_remote(out_dir)
    if remote:
        paths.remove(paths.join(out_dir, PARTS, "previous-manifest.json"))
    metas.sort(key=lambda m: m["chunk"])
    total_stats = instances_lib.InstanceStats()
    dropped = 0
    out: dict[str, dict] = {}
    for split in splits:
        own = sorted((m for m in metas if m["split"] == split), key=lambda m: m["shard"])
        shards = []
        for m in own:
            name = shard_name(split, m["shard"], len(own))
            target = paths.join(out_dir, name)
            if remote and m["file"] != target:
                paths.move(m["file"], target)
            elif not remote and os.path.abspath(m["file"]) != target:
                os.replace(m["file"], target)
            total_stats.add(instances_lib.InstanceStats(**m["instance_stats"]))
            dropped += m["vocab_check_dropped"]
            shards.append(
                {
                    "file": name,
                    "examples": m["examples"],
                    "tokens": m["tokens"],
                    "bytes": m["bytes"],
                    "sha256": m["sha256"],
                    "input_sha256": m["input_sha256"],
                    "documents": m["instance_stats"]["documents"],
                    "instance_stats": m["instance_stats"],
                    "vocab_check_dropped": m["vocab_check_dropped"],
                }
            )
        if own or split == "train":
            out[split] = {
                "examples": sum(s["examples"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
    keep = {s["file"] for info in out.values() for s in info["shards"]}
    for name in paths.sizes(out_dir) if remote else os.listdir(out_dir):
        if SHARD_RE.match(name) and name not in keep:  # shards of an earlier, different run
            paths.remove(paths.join(out_dir, name))
    return out, total_stats, dropped
