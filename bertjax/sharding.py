"""Logical axis names and the rules that map them onto mesh axes.

Every parameter and every activation at a block boundary carries logical axis
names from the fixed vocabulary below. A config's `sharding.rules` maps them onto
the mesh axes `data`, `fsdp`, `tensor`, so data parallelism, FSDP and tensor
parallelism are config switches rather than code paths.
"""

from __future__ import annotations

# The whole vocabulary of logical axes. Add a name only with a reason.
BATCH = "batch"  # examples in a batch
LENGTH = "length"  # token positions
EMBED = "embed"  # residual stream / embedding features
HEADS = "heads"  # attention heads
KV = "kv"  # features inside one head
MLP = "mlp"  # FFN intermediate features
VOCAB = "vocab"  # vocabulary rows (word embeddings, MLM bias)
LAYERS = "layers"  # stacked layers under nn.scan; never sharded
POSITIONS = "positions"  # rows of position / token-type tables; small, replicated

MESH_AXES = ("data", "fsdp", "tensor")

# Default rules: batch over data and fsdp; parameters' embed axis over fsdp; heads, mlp
# and vocab over tensor. With fsdp=tensor=1 this is plain data parallelism.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (KV, None),
    (MLP, "tensor"),
    (VOCAB, "tensor"),
    (LAYERS, None),
    (POSITIONS, None),
)
