"""demo_intruder's examples built from prose the demo corpus does not hold, to tell what
a pretrained start learnt about words in context from what it memorised of the corpus
(the demo tasks' documents are in the quickstart's pretraining data).

  python benchmarks/demo_intruder_heldout.py --out=/tmp/intruder_heldout
  python -m bertjax evaluate --config=configs/finetune.py:demo_intruder,bert_tiny,runlocal \
      --config.finetune.data=json:/tmp/intruder_heldout --checkpoint=WORKDIR/best

The same construction (bertjax/data/demo_tasks.py: intruder_articles, with content words
and frequencies counted over the new documents) over the docstrings of installed
packages that are not among the demo corpus's (transformers, torch, pandas, sklearn,
matplotlib, pip: requirements-dev.txt brings some of them), read the way the demo corpus
is read. The examples of demo_tasks' train split of those documents (the most of them)
are written as OUT/dev-v1.1.json, those of its validation split as OUT/train-v1.1.json
(the squad reader wants both files; evaluate reads the dev one); `--documents=FILE`
writes the documents themselves, for `evaluate --documents` (benchmarks/recipes_demo.sh
scores MLM on them). Prints how many
sentences the demo corpus also has, and the first-content-word baseline on the dev file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("transformers", "torch", "pandas", "sklearn", "matplotlib", "pip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for the two JSON files")
    parser.add_argument(
        "--documents",
        default="",
        help="also write the held-out documents here, for `evaluate --documents` (one "
        "sentence a line, an empty line between documents)",
    )
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from bertjax.data import demo_corpus, demo_tasks
    from bertjax.scoring import squad

    demo = {" ".join(s) for v in demo_tasks.documents().values() for doc in v for s in doc}
    site = sysconfig.get_paths()["purelib"]
    files = [
        f
        for package in PACKAGES
        if os.path.isdir(os.path.join(site, package))
        for f in sorted(
            demo_corpus.python_files(
                os.path.join(site, package), ("test", "tests", "testing", "_vendor")
            )
        )
    ]
    if not files:
        raise SystemExit(f"none of {', '.join(PACKAGES)} is installed in {site}")
    demo_corpus.files = lambda: iter(files)  # the demo corpus's reader, other files
    demo_tasks.documents.cache_clear()
    demo_tasks.content_words.cache_clear()
    docs = demo_tasks.documents()
    held = {" ".join(s) for v in docs.values() for doc in v for s in doc}
    print(
        f"documents: {sum(map(len, docs.values()))}; sentences: {len(held)}, "
        f"{len(held & demo)} of them also in the demo corpus"
    )
    os.makedirs(args.out, exist_ok=True)
    if args.documents:
        with open(args.documents, "w") as f:
            for split in sorted(docs):
                for doc in docs[split]:
                    f.write("".join(" ".join(s) + "\n" for s in doc) + "\n")
        print(f"wrote {args.documents}")
    dev = demo_tasks.intruder_articles("train")
    for articles, name in (
        (dev, "dev-v1.1.json"),
        (demo_tasks.intruder_articles("validation"), "train-v1.1.json"),
    ):
        with open(os.path.join(args.out, name), "w") as f:
            json.dump({"version": "1.1", "data": articles}, f)
    first = demo_tasks.first_content_words(dev)
    print(
        f"wrote {args.out}/dev-v1.1.json ({len(first)} questions); first content word: "
        f"{json.dumps(squad.score_v1(dev, first))}"
    )


if __name__ == "__main__":
    main()
