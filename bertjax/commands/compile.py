r"""`python -m bertjax compile`: the train step compiled for a Cloud TPU slice, here.

  python -m bertjax compile --config=configs/pretrain.py:bert_large \
      --topology=v5e:4x4 [--num_slices=2] [--mfu=0.5] [--libtpu=PATH]

Needs libtpu outside the environment (bertjax/tools/tpu_compile.py):
  pip install --target ~/.cache/bertjax/libtpu "libtpu==0.0.42.*"
Prints per-chip HBM against the chip's, whether it fits, FLOPs per step and the step
time and tokens/s at the chips' peak and at --mfu; exit 1 with one line when it does
not fit.

XLA's TPU compiler takes minutes on a CPU: on a 2-core machine shared with other work,
v5e:2x2 at batch 256 x 128, bert_tiny took 3.5 min (3.3 min of CPU time) and bert_base
10.5 min (7.1 min of CPU time); BERT-Large on v5e:4x4: 25 min and more. A line every
--progress_every seconds says it is still at work; Ctrl-C (exit 130) or SIGTERM (143)
stop it at once with one line.
"""

from __future__ import annotations

from absl import flags

from bertjax.commands import flags as common

_TOPOLOGY = flags.DEFINE_string(
    "topology",
    None,
    "compile: a Cloud TPU topology, CHIP:SHAPE "
    "(v5e:4x4, v4:2x2x4, v5p:2x2x2, v6e:4x4) or an accelerator "
    "type (v5litepod-16, v4-32).",
)
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "compile: slices joined over DCN.")
_MFU = flags.DEFINE_float("mfu", 0.5, "compile: the MFU to state the step time at.")
_PROGRESS = flags.DEFINE_float(
    "progress_every",
    30.0,
    "compile: seconds between the lines that say XLA's TPU compiler is still at work.",
)
_LIBTPU = flags.DEFINE_string(
    "libtpu",
    None,
    "compile: libtpu.so (or the directory pip "
    "installed it into); default $TPU_LIBRARY_PATH or "
    "~/.cache/bertjax/libtpu.",
)

HELP = {
    "compile": common.Usage(
        (common.CONFIG, _TOPOLOGY, _NUM_SLICES, _MFU, _PROGRESS, _LIBTPU), "accelerators.md"
    )
}


def main(argv: list[str]) -> None:
    del argv
    from bertjax.tools import tpu_compile, tpu_topology

    # Ctrl-C while JAX and libtpu load would land in whatever Python code runs then
    # (a garbage-collection callback swallows it); compile_for guards the compile.
    with tpu_compile.interruptible(lambda: "before compiling"):
        import jax

        # The compile-only TPU devices come from libtpu; everything else stays on the CPU.
        jax.config.update("jax_platforms", "cpu")
        topology = tpu_topology.parse_topology(common.required(_TOPOLOGY), _NUM_SLICES.value)
        tpu_compile.compile_for(
            common.required(common.CONFIG),
            topology,
            libtpu=_LIBTPU.value,
            mfu=_MFU.value,
            progress_every=_PROGRESS.value,
        )
