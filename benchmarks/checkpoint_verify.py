"""What verifying a training checkpoint costs on resume: the time to restore a train state
and the time to check it (every leaf's fingerprint against the digest recorded at save,
every value finite; bertjax/checkpoint.py), for a config's real state.

  python benchmarks/checkpoint_verify.py [--config=configs/pretrain.py:bert_base] \
      [--dir=/tmp/bertjax_verify] [--repeats=3]

Prints the state's size, the save time, and per repeat the restore and verify times; the
verify time is what resume adds to a restore.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pretrain.py:bert_base")
    parser.add_argument("--dir", default="/tmp/bertjax_verify")
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    sys.path.insert(0, ROOT)
    import jax
    from ml_collections import config_flags

    from bertjax import checkpoint, experiment, sharding

    flag = config_flags.DEFINE_config_file("config", os.path.join(ROOT, a.config))
    from absl import flags

    flags.FLAGS([sys.argv[0]])
    config = flag.value
    setup = experiment.build_setup(config)
    state, _ = sharding.create_sharded(setup.init, setup.abstract, setup.mesh, setup.rules)
    leaves = jax.tree.leaves(state)
    size = sum(x.size * x.dtype.itemsize for x in leaves)
    print(
        f"{a.config}: train state {size / 2**30:.2f} GiB in {len(leaves)} leaves, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s)",
        flush=True,
    )
    shutil.rmtree(a.dir, ignore_errors=True)
    ckpts = checkpoint.TrainCheckpoints(a.dir, async_save=False)
    t = time.perf_counter()
    ckpts.save(1, state, {}, {})
    print(f"save (fingerprint + write): {time.perf_counter() - t:.2f} s", flush=True)
    del state, leaves
    for i in range(a.repeats):
        t = time.perf_counter()
        restored, _, meta = ckpts.restore(1, setup.target)
        jax.block_until_ready(restored)
        read = time.perf_counter() - t
        t = time.perf_counter()
        problem = ckpts.verify(restored, meta)
        check = time.perf_counter() - t
        assert problem is None, problem
        print(
            f"repeat {i + 1}: restore {read:.2f} s, verify {check:.2f} s "
            f"({size / 2**30 / check:.2f} GiB/s; {100 * check / read:.0f}% of the restore)",
            flush=True,
        )
        del restored
    ckpts.close()
    shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
