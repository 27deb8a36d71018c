"""Cloud TPU topologies as `compile` (tpu_compile.py) names them: the chip generations
with the figures its report needs (HBM, peak bf16 FLOP/s, from Cloud TPU's published
tables), and `--topology` parsed from CHIP:SHAPE ("v5e:4x4") or an accelerator type
("v5litepod-16", "v4-32"), with the hosts a slice of that shape has.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Chip:
    """What the report needs of a TPU generation (Cloud TPU's published figures)."""

    name: str  # as libtpu spells the chip in a topology name
    hbm_gib: float  # per chip
    peak_bf16: float  # FLOP/s per chip
    dims: int  # topology dimensions: 2 (v5e, v6e) or 3 (v4, v5p)
    cores_in_type: int  # cores per chip counted in accelerator-type names (v4-32: 16 chips)
    type_prefix: str  # accelerator-type name prefix


CHIPS = {
    "v4": Chip("v4", 32.0, 275e12, 3, 2, "v4"),
    "v5e": Chip("v5e", 16.0, 197e12, 2, 1, "v5litepod"),
    "v5p": Chip("v5p", 95.0, 459e12, 3, 2, "v5p"),
    "v6e": Chip("v6e", 32.0, 918e12, 2, 1, "v6e"),
}
# Accelerator types (v5litepod-16, v4-32, ...) -> the topology Cloud TPU gives them.
_TWO_D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_THREE_D = {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    256: "4x8x8",
    512: "8x8x8",
}


@dataclasses.dataclass(frozen=True)
class Topology:
    chip: Chip
    shape: tuple[int, ...]  # chips along each dimension
    num_slices: int

    @property
    def chips(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def name(self) -> str:
        return f"{self.chip.name}:{'x'.join(map(str, self.shape))}"

    @property
    def host_bounds(self) -> tuple[int, int, int]:
        """Chips per host along each dimension: a whole single-host slice of up to 8
        v5e/v6e chips, else 2x2 (4 chips a host), as Cloud TPU VMs have them."""
        shape = (*self.shape, 1, 1)[:3]
        if self.chip.dims == 2 and self.chips <= 8:
            return shape[0], shape[1], 1
        return min(shape[0], 2), min(shape[1], 2), 1


def parse_topology(text: str, num_slices: int = 1) -> Topology:
    """ "v5e:4x4" (chip:shape) or an accelerator type ("v5litepod-16", "v4-32")."""
    if num_slices < 1:
        raise ValueError(f"--num_slices={num_slices}: must be >= 1")
    m = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", text)
    if m:
        chip = CHIPS[m.group(1)]
        shape = tuple(int(x) for x in m.group(2).split("x"))
        if len(shape) != chip.dims or min(shape) < 1:
            raise ValueError(
                f"--topology={text}: a {chip.name} topology has {chip.dims} "
                f"dimensions, e.g. {chip.name}:{_example(chip)}"
            )
        return Topology(chip, shape, num_slices)
    m = re.fullmatch(r"(v4|v5litepod|v5p|v6e)-(\d+)", text)
    if m:
        chip = next(c for c in CHIPS.values() if c.type_prefix == m.group(1))
        chips, rest = divmod(int(m.group(2)), chip.cores_in_type)
        table = _TWO_D if chip.dims == 2 else _THREE_D
        if rest or chips not in table:
            known = ", ".join(f"{m.group(1)}-{n * chip.cores_in_type}" for n in table)
            raise ValueError(f"--topology={text}: not a {m.group(1)} size this knows ({known})")
        return Topology(chip, tuple(int(x) for x in table[chips].split("x")), num_slices)
    raise ValueError(
        f"--topology={text!r}: expected CHIP:SHAPE with CHIP one of "
        f"{', '.join(CHIPS)} (v5e:4x4, v4:2x2x4) or an accelerator type "
        "(v5litepod-16, v4-32, v5p-16, v6e-16)"
    )


def _example(chip: Chip) -> str:
    return "4x4" if chip.dims == 2 else "2x2x4"
