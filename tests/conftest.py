"""Test-wide settings, applied before JAX or TensorFlow is imported."""

import os

# XLA's CPU backend spends most of a tiny model's test time in LLVM optimisation;
# level 0 halves compile times and leaves the arithmetic IEEE-exact as before.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
