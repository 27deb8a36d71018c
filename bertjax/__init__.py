"""bertjax: pretraining BERT-family encoders in JAX/Flax."""

import os

# Orbax reads and writes its small files through etils epath, which would use
# TensorFlow's GCS filesystem for gs:// whenever TensorFlow is installed; fsspec (gcsfs)
# instead, as bertjax.paths does: one client and one set of credentials for every gs://
# file, and one that honours STORAGE_EMULATOR_HOST.
os.environ.setdefault("EPATH_USE_TF", "false")
