"""Input side of bertjax: text sources, tokenizers, preparation, masking, pipeline.

Only this package may import TensorFlow, and only in the modules that need it
(never at package import), so `bertjax.data.tokenizers` stays usable where only
JAX is installed.
"""
