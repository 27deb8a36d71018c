"""Fault injection for the reliability tests, as a training-loop hook (bertjax.train.Hook).

  python tests/faults.py KIND:STEP train --config=... --workdir=...
  python tests/faults.py KIND:STEP sweep --config=... --workdir=...

runs the `train` (or `sweep`: the first of its trainings to reach STEP) command with one
fault:
  kill_after_step:N   SIGKILL right after step N, once earlier saves have committed (so
                      a test knows what survives)
  kill_in_save:N      SIGKILL while step N's checkpoint is being written in the background
  sigterm_at_step:N   a preemption notice after step N
In-process tests pass `Fault.parse(spec)` to `bertjax.train.train(..., hooks=[...])`.
"""

from __future__ import annotations

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bertjax.train import Hook  # noqa: E402

KINDS = ("kill_after_step", "kill_in_save", "sigterm_at_step")


class Fault(Hook):
    def __init__(self, kind: str, step: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"fault {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind, self.step = kind, step

    @classmethod
    def parse(cls, spec: str) -> Fault:
        kind, _, step = spec.partition(":")
        if not step.isdigit():
            raise ValueError(f"fault {spec!r}: expected KIND:STEP")
        return cls(kind, int(step))

    def after_step(self, trainer, step: int) -> None:
        if step != self.step or self.kind == "kill_in_save":
            return
        if self.kind == "kill_after_step":
            trainer.ckpts.wait()
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGTERM if self.kind == "sigterm_at_step" else signal.SIGKILL)

    def after_save(self, trainer, step: int) -> None:
        if self.kind == "kill_in_save" and step == self.step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    import importlib

    fault = Fault.parse(sys.argv.pop(1))
    from bertjax import __main__ as entry

    importlib.import_module(f"bertjax.commands.{sys.argv[1]}").HOOKS.append(fault)
    sys.exit(entry.main())
