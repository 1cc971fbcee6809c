"""Training checkpoints: model, optimizer, scheduler, step, RNG states and config, written atomically.

A checkpoint is one ``torch.save`` file written through :func:`vppkit.utils.io.atomic_path`, so a run killed while
saving leaves the previous checkpoint intact. ``--resume`` loads ``<run>/checkpoint_last.pt``.
:func:`load_model` rebuilds the trained VIS model a checkpoint holds (inference, analyses).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vppkit.config import merge
from vppkit.models.vis.model import build_vis_model
from vppkit.utils.io import atomic_path

LAST = "checkpoint_last.pt"
FINAL = "model_final.pt"


def rng_states() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_states(st: dict) -> None:
    """Inverse of :func:`rng_states`."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    config: dict | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically; returns the path.

    Contents: ``model`` (state dict), ``optimizer``, ``scheduler``, ``step`` (optimizer steps done), ``rng``,
    ``config`` (the resolved profile), plus ``extra`` (e.g. ``num_classes``, ``category_ids``, ``stage``).
    """
    obj: dict[str, Any] = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": rng_states(),
        "config": config,
    }
    obj.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` does not exist (named in the message).
        ValueError: the file is not a vppkit checkpoint (no ``model`` entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    obj = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(obj, dict) or "model" not in obj:
        raise ValueError(f"{path} is not a vppkit checkpoint (no 'model' state dict)")
    return obj


def load_model(checkpoint: str | Path, pruning: dict | None = None, device: str = "cpu",
               overrides: dict | None = None, ck: dict | None = None):
    """Rebuild a trained :class:`VISModel` from a checkpoint (its stored config), in eval mode.

    Args:
        checkpoint: a ``model_final.pt`` / ``checkpoint_last.pt``.
        pruning: the pruning section to build (default: the one stored when the checkpoint is from the sparse
            stage, else dense).
        overrides: deep-merged into the stored config's ``model`` section.
        ck: the checkpoint dict when the caller has already loaded ``checkpoint`` (not read again).

    Returns:
        (model, checkpoint dict).
    """
    ck = ck if ck is not None else load_checkpoint(checkpoint, map_location="cpu")
    cfg = copy.deepcopy(ck["config"])
    if pruning is None and ck.get("stage") == "sparse":
        pruning = cfg.get("pruning")
    # the backbone as it was built (after a pretrained fallback, if any); its weights are in the checkpoint
    built = (ck.get("backbone") or {}).get("model") or cfg["model"]
    mcfg = merge(built, overrides or {})
    model = build_vis_model(mcfg, int(ck["num_classes"]), pruning, load_pretrained=False)
    if ck.get("backbone"):
        model.backbone_info = dict(ck["backbone"])
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    bad = [k for k in missing if ".pruner." not in k]
    unexpected = [k for k in unexpected if ".pruner." not in k]
    if bad or unexpected:
        raise ValueError(f"{checkpoint}: state dict does not fit the model (missing {bad[:5]}, unexpected "
                         f"{list(unexpected)[:5]})")
    return model.to(device).eval(), ck
