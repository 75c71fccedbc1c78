"""Reading mmdetection (mmengine) ``.pth`` / ``.pt`` checkpoints with PyTorch, into NumPy.

PyTorch is the optional extra ``pip install rtmdet_keras[convert]``, imported only here, only for these
files. The tensors come from ``checkpoint["state_dict"]``: mmengine's ``EMAHook`` swaps the averaged
weights into ``state_dict`` when it saves, and puts the raw training weights into ``ema_state_dict`` (keys
``module.<name>`` plus the ``steps`` counter); published checkpoints keep ``state_dict`` only. So the
default already is the EMA. ``state_dict_key="ema_state_dict"`` takes the other one (the ``module.``
prefix and ``steps`` are dropped). A bare state dict (every value a tensor, optionally ``module.``-prefixed
as DDP saves it) is accepted too.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping
from typing import Dict, List, Tuple

import numpy as np

from rtmdet_keras.models.checkpoint_layout import CheckpointError, name_list

TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")
STATE_DICT_KEYS = ("state_dict", "ema_state_dict")

TORCH_MISSING = (
    "reading the PyTorch checkpoint {path} needs PyTorch, which rtmdet_keras does not install by default: "
    "pip install 'rtmdet_keras[convert]' (the CPU build of torch is enough), or convert it once where "
    "torch is installed (rtmdet convert-checkpoint IN.pth OUT.npz --config PRESET) and use the .npz")


def _restricted_pickle_module(skipped: set):
    """A ``pickle_module`` for ``torch.load`` that rebuilds tensors and plain containers only.

    Any other global (mmengine classes, NumPy scalars in ``meta``, the optimiser's state, ...) becomes
    an inert placeholder instead of being imported and run: the weights are all we read, and a
    checkpoint from the internet should not execute code. Used only when ``weights_only=True``
    refuses the file.
    """
    import torch  # lazy: the optional extra, needed only for .pth files

    allowed = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor"),
               ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
               ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
               ("torch.nn.parameter", "Parameter"), ("torch", "Tensor"), ("torch", "Size"), ("torch", "device"),
               ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex")}

    class Placeholder:
        origin = "?"

        def __new__(cls, *args, **kwargs):
            return object.__new__(cls)

        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

        def __repr__(self):
            return f"<skipped {self.origin}>"

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
                return super().find_class(module, name)
            skipped.add(f"{module}.{name}")
            return type(f"Skipped_{name}", (Placeholder,), {"origin": f"{module}.{name}"})

    mod = types.ModuleType("rtmdet_keras_tensors_only_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.Pickler = pickle.Pickler
    return mod


def _to_numpy(obj, torch):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v, torch) for k, v in obj.items()}
    return obj


def read_torch_checkpoint(path, print_fn=print) -> dict:
    """Read a ``.pth`` file into plain dicts of NumPy arrays (float tensors as float32).

    Tries ``torch.load(weights_only=True)`` first; a file that holds other objects too (training
    checkpoints keep mmengine's message hub) is re-read with an unpickler that rebuilds only tensors
    and containers, and the skipped types are printed.

    Raises:
        CheckpointError: torch is not installed, or the file is not a PyTorch checkpoint.
    """
    try:
        import torch  # lazy: the optional extra, needed only for .pth files
    except ImportError:
        raise CheckpointError(TORCH_MISSING.format(path=path)) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        skipped: set = set()
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False,
                             pickle_module=_restricted_pickle_module(skipped))
        except Exception as e:  # noqa: BLE001 (any failure here means "not a checkpoint we can read")
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
        if skipped:
            print_fn(f"{path}: read tensors only; left out objects of {len(skipped)} non-tensor types "
                     f"({name_list(sorted(skipped), 5)})")
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    return _to_numpy(obj, torch)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or (hasattr(v, "shape") and hasattr(v, "dtype"))


def extract_state_dict(checkpoint: Mapping,
                       state_dict_key: str = "state_dict") -> Tuple[Dict[str, np.ndarray], dict, List[str]]:
    """The state dict inside an mmdetection checkpoint, as ``{name: np.ndarray}``.

    Args:
        checkpoint: what ``torch.load`` returned (converted to NumPy), or a bare state dict.
        state_dict_key: ``"state_dict"`` (default; mmengine saves the EMA weights there) or
            ``"ema_state_dict"`` (mmengine saves the raw training weights there).

    Returns:
        ``(state_dict, meta, ignored)``: keys without the ``module.`` prefix; ``meta`` is the
        checkpoint's ``meta`` dict (``{}`` if none); ``ignored`` names the EMA ``steps`` counter if dropped.
    """
    if state_dict_key not in STATE_DICT_KEYS:
        raise CheckpointError(f"state_dict_key must be one of {', '.join(STATE_DICT_KEYS)}, got {state_dict_key!r}")
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(checkpoint).__name__}")
    meta = {}
    if state_dict_key in checkpoint:
        state = checkpoint[state_dict_key]
        meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), Mapping) else {}
    elif any(k in checkpoint for k in STATE_DICT_KEYS):
        raise CheckpointError(f"the checkpoint has no {state_dict_key!r} (it has {', '.join(map(str, checkpoint))})")
    elif checkpoint and all(_is_array(v) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError(f"no state dict in the checkpoint: expected a 'state_dict' entry or a dict of tensors, "
                              f"found the keys {name_list(map(str, checkpoint), 10)}")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint[{state_dict_key!r}] is a {type(state).__name__}, not a dict of tensors")
    not_arrays = [k for k, v in state.items() if not _is_array(v)]
    if not_arrays:
        raise CheckpointError(f"checkpoint[{state_dict_key!r}] holds entries that are not tensors: "
                              f"{name_list(not_arrays)}")
    state = {str(k): np.asarray(v) for k, v in state.items()}
    ignored = []
    if state_dict_key == "ema_state_dict" and "steps" in state:
        del state["steps"]  # ExponentialMovingAverage's update counter, not a weight
        ignored.append("steps")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, dict(meta), ignored
