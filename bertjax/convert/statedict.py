"""transformers checkpoint files <-> numpy state dicts: model.safetensors (sharded with
model.safetensors.index.json too) or pytorch_model.bin, read with torch's
`weights_only=True`; written as one model.safetensors, atomically. Errors name the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from bertjax import paths
from bertjax.convert.names import ConversionError


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """model.safetensors (preferred) or pytorch_model.bin (weights_only) -> numpy arrays."""
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        from safetensors.numpy import load_file

        try:
            return load_file(st)
        except Exception as e:  # noqa: BLE001 - any parse failure is "unreadable file"
            raise ConversionError(f"{st}: cannot read safetensors ({e})") from None
    if os.path.exists(os.path.join(directory, "model.safetensors.index.json")):
        return _read_sharded(directory)
    binf = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binf):
        try:
            import torch
        except ImportError:
            raise ConversionError(
                f"{binf}: reading .bin files needs torch; "
                "convert it to model.safetensors or install torch"
            ) from None
        try:
            # weights_only: the unpickler accepts tensors and plain containers only, so a
            # file holding any other object is refused instead of running its code.
            sd = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]  # torch's is long
            raise ConversionError(
                f"{binf}: refused by torch.load(weights_only=True): {why}"
            ) from None
        if not isinstance(sd, Mapping):
            raise ConversionError(f"{binf}: holds a {type(sd).__name__}, not a state dict")
        out = {}
        for k, v in sd.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise ConversionError(f"{binf}: entry {k!r} is a {type(v).__name__}, not a tensor")
            v = v.detach().cpu().contiguous()
            out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        return out
    raise ConversionError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _read_sharded(directory: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = os.path.join(directory, "model.safetensors.index.json")
    try:
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(f"{index}: cannot read the weight map ({e!r})") from None
    sd: dict[str, np.ndarray] = {}
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise ConversionError(f"{path}: listed in {index} but missing")
        try:
            sd.update(load_file(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is "unreadable file"
            raise ConversionError(f"{path}: cannot read safetensors ({e})") from None
    return sd


def write_state_dict(directory: str, state_dict: Mapping[str, np.ndarray]) -> None:
    """Writes `directory`/model.safetensors atomically (temporary name, then rename)."""
    from safetensors.numpy import save_file

    path = os.path.join(directory, "model.safetensors")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in state_dict.items()},
            tmp,
            metadata={"format": "pt"},
        )
        paths.apply_umask(tmp)  # safetensors creates the file 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
