"""Checkpoints: written atomically, read as data only (weights_only=True), format-versioned."""

from __future__ import annotations

import errno
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from charrnn_tui.engine.errors import CheckpointError
from charrnn_tui.engine.runs import replace_atomically

FORMAT = "charrnn-tui"
FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never a half-written one.
    """
    path = Path(path)
    try:
        save_atomically({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {os_reason(e)}; the previous one is intact") from None


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over it: the old file or the new
    one, whenever a kill comes. Raises OSError, the temporary file removed."""
    replace_atomically(path, lambda f: torch.save(payload, f))  # user-only: its samples hold the user's text


def os_reason(e: OSError) -> str:
    return "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint as plain data and tensors; anything else is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, which is what a crafted file wants: never
        # pass that on; name what the file tried to load instead.
        blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
        if blocked:
            raise CheckpointError(f"{path}: refused, loading it would import {blocked.group(1)}; a checkpoint "
                                  "holds only tensors and plain data") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt)") from None
    except Exception as e:  # a corrupt file can fail in any way inside the unpickler: all mean the same
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {first_line(e)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a charrnn-tui checkpoint")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this charrnn-tui reads version {FORMAT_VERSION}"
        )
    broken = non_finite_tensor(data)
    if broken is not None:
        raise CheckpointError(f"{path}: {broken} is not finite (saved after training diverged); "
                              "use an earlier step-N.pt or best.pt from the run folder")
    return data


def non_finite_tensor(payload: Any) -> str | None:
    """The name of the first floating-point tensor in `payload` holding a NaN or an infinity, or
    None when all are finite. One sync per device, however many tensors there are."""
    named = list(_floating_tensors(payload, ""))
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(i)
    finite = [True] * len(named)
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in indices]).tolist()  # the sync
        for i, flag in zip(indices, flags, strict=True):
            finite[i] = flag
    return next((name for (name, _), ok in zip(named, finite, strict=True) if not ok), None)


def _floating_tensors(value: Any, name: str):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield name or "tensor", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floating_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floating_tensors(item, f"{name}[{i}]")


def first_line(e: BaseException) -> str:
    """The first sentence of an exception's message, for one-line errors."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    sentence = text.splitlines()[0].split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 120 else sentence[:117].rsplit(" ", 1)[0] + "..."

