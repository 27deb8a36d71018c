"""Test-wide settings, applied before JAX or TensorFlow is imported."""

import os
import shutil
import tempfile

import gcs  # sets the Cloud Storage emulator's variables before any client is imported
import pytest

# XLA's CPU backend spends most of a tiny model's test time in LLVM optimisation;
# level 0 halves compile times and leaves the arithmetic IEEE-exact as before.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent compilation cache per test session, inherited by the subprocesses the
# tests start: the train commands of the kill / resume tests compile the same programs
# several times (test_train.py runs in two thirds of the time with it). A cache hit
# loads the executable XLA compiled for the same program, so results are unchanged.
# A size limit turns on the cache's file lock, so concurrent processes never read a
# half-written entry.
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="bertjax-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))


# Test tiers. The unit tier (`python -m pytest -m unit`, README "Tests") is the modules in
# UNIT, each test seconds at most: layers, heads, losses, optimizers, schedules, masking,
# tokenizers, parity with transformers, scoring, the layout; it runs in about 3 minutes
# on 2 cores. Every other module (training runs, commands, emulated buckets, several
# processes) is the integration tier, and so is a test marked `@pytest.mark.integration`
# inside a unit module (a slow parity test). A new module starts in the integration
# tier; add it here once it is quick.
UNIT = {
    "test_compare",
    "test_convert_hf",
    "test_demo_tasks",
    "test_finetune_recipes",
    "test_google_records",
    "test_help",
    "test_instances",
    "test_layout",
    "test_masking",
    "test_metrics",
    "test_models",
    "test_modernbert",
    "test_modernbert_convert",
    "test_modernbert_tokenizer",
    "test_objectives",
    "test_optim",
    "test_packer",
    "test_paths",
    "test_recipes_configs",
    "test_recipes_ema",
    "test_recipes_lengths",
    "test_recipes_mixture",
    "test_recipes_plan",
    "test_recipes_schedule",
    "test_scoring",
    "test_sources",
    "test_squad",
    "test_steps",
    "test_tokenizers",
    "test_train_tokenizer",
}


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        slow = item.get_closest_marker("integration") is not None
        item.add_marker(
            pytest.mark.unit if module in UNIT and not slow else pytest.mark.integration
        )


@pytest.fixture
def bucket() -> str:
    """gs://NAME: a new, empty bucket on the local Cloud Storage emulator (tests/gcs.py)."""
    return gcs.bucket()


def pytest_sessionfinish(session, exitstatus):
    del session, exitstatus
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)
