"""`bench prepare`: the throughput of `prepare data`, per masking and worker count.

python -m bertjax bench prepare --config=configs/pretrain.py:bert_base [--workers=1,2]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any


def bench_prepare(
    config: Any,
    workers: Iterable[int] = (1, 2),
    maskings: Iterable[str] = ("static", "dynamic"),
    print_fn: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Times `prepare data` with `config`'s settings on `config.data.source`, once per
    (masking, worker count), each into a fresh temporary directory; prints and returns
    MB of text/s and instances written/s, in all and per worker. The tokenizer
    (`config.tokenizer.path`, else trained on the source) is made once, outside the
    timings; the source is read once into memory first, so its own decoding is not timed.
    """
    from bertjax.data import sources
    from bertjax.data.from_config import _tokenizer, prepare_data

    source = sources.open_source(config.data.source)
    documents = list(source.documents())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if config.tokenizer.path:
            tok_path = config.tokenizer.path
        else:
            tok_path = os.path.join(tmp, "tokenizer")
            _tokenizer(config, documents, tok_path)
        for masking in maskings:
            for n in workers:
                c = config.copy_and_resolve_references()
                with c.unlocked():
                    c.tokenizer.path = tok_path
                    c.data.update(
                        masking=masking, num_workers=n, dir=os.path.join(tmp, f"{masking}-{n}")
                    )
                    if masking == "dynamic":
                        c.data.dupe_factor = 1
                t0 = time.perf_counter()
                manifest = prepare_data(c, documents=documents, progress=False)
                elapsed = time.perf_counter() - t0
                shutil.rmtree(c.data.dir)
                mb = manifest["input_stats"]["bytes"] / 1e6
                written = sum(s["examples"] for s in manifest["splits"].values())
                row = {
                    "masking": masking,
                    "workers": n,
                    "dupe_factor": c.data.dupe_factor,
                    "mb": mb,
                    "instances": written,
                    "seconds": elapsed,
                    "mb_per_s": mb / elapsed,
                    "instances_per_s": written / elapsed,
                }
                rows.append(row)
                per = max(n, 1)
                who = f"{n} worker{'s' if n != 1 else ''}" if n else "in the main process"
                print_fn(
                    f"prepare {masking} (dupe_factor {row['dupe_factor']}), {who}: "
                    f"{mb:.2f} MB, {written:,} instances in "
                    f"{elapsed:.1f} s: {row['mb_per_s']:.2f} MB/s "
                    f"({row['mb_per_s'] / per:.2f} per worker), "
                    f"{row['instances_per_s']:,.0f} instances/s "
                    f"({row['instances_per_s'] / per:,.0f} per worker)"
                )
    return rows
