"""Tooling around the core: what the commands run besides training itself.

  aot          the largest batch whose train step fits (`bench train`), the teacher as shapes
  tpu_compile  that step compiled for a Cloud TPU topology on any machine (`compile`)
  bench_train  the train step's throughput against transformers' PyTorch model (`bench train`)
  describe     a model's parameter table and FLOPs per token (`describe`, `init`)
  seeds        fine-tuning repeated over seeds, scores and their median (`train`)
  downstream   fine-tuning evaluations after pretraining (`train`, `sweep`)
  sweep        the runs of an ablation a config declares (`sweep`)
  compare      runs' logs, configs and results as a table and plots (`compare`)

Tools import the core (bertjax/train.py, experiment.py, ...) and commands
(bertjax/commands/) import tools; the core imports none of them (the memory check train.py
runs before its first step is core: bertjax/memory.py; tests/test_layout.py holds that line).
"""
