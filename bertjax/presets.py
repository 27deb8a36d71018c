"""Named architectures: the published sizes of the five families and the 24 small BERTs.

Each family file (bertjax/models/<family>.py) declares its presets; `model_config(name)`
returns the validated ModelConfig of one, and configs/*.py use it so a preset is
defined once.
"""

from __future__ import annotations

from typing import Any

from bertjax.models.config import ConfigError, ModelConfig
from bertjax.models.registry import presets

PRESETS: dict[str, dict[str, Any]] = presets()


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of preset `name`; unknown names are an error listing a few valid ones."""
    if name not in PRESETS:
        close = sorted(p for p in PRESETS if p.split("_")[0] == name.split("_")[0])[:8]
        hint = ", ".join(close or sorted(PRESETS)[:8])
        raise ConfigError(f"unknown preset {name!r}; e.g. {hint}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
