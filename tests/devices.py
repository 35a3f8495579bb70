"""A second device on a CPU-only machine: `VirtualDevice` runs code as if the accelerator were not the host.

On a GPU, a tensor created without `device=` lives on the host, and an operation that meets it with a device tensor
(an index, `torch.where`, `cat`, arithmetic) raises; on a CPU machine both are the CPU and nothing shows. This
`TorchFunctionMode` gives every tensor a virtual place and records each operation that would raise on a GPU:

- a tensor made without `device=` from no tensor (`torch.tensor(list)`, `arange`, `zeros`, `randperm`, ...) is on
  the host; so is one made by `.cpu()` or `device="cpu"`;
- `device=` anything else, `.to(torch.device)`, `.to(tensor)` and `.cuda()` put it on the device; tensors made
  before the mode (the model's weights, moved there by the trainer) count as on the device;
- any other operation's result is on the device if one of its inputs is, else on the host.

Allowed mixes, as on CUDA: zero-dimensional host tensors (Python scalars), a device tensor indexed by host indices,
copies and moves. Anything else that meets a host tensor with a device tensor is a fault, recorded with the
innermost `tandem` frame.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

MOVES = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.cuda, torch.Tensor.cpu}
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def on_host(tensor: torch.Tensor) -> bool:
    return tensor.__dict__.get("_virtual_host", False)


def _target(func, args, kwargs) -> str | None:
    """Where a move or a `device=` puts its result: "host", "device" or None (not said)."""
    if func is torch.Tensor.cpu:
        return "host"
    if func is torch.Tensor.cuda:
        return "device"
    places = [kwargs.get("device")]
    if func is torch.Tensor.to:
        places += list(args[1:])
    for place in places:
        if isinstance(place, torch.Tensor):
            return "host" if on_host(place) else "device"
        if isinstance(place, (str, torch.device)):
            return "host" if place == "cpu" else "device"  # the accelerator's device object, even when it is the CPU
    return None


class VirtualDevice(TorchFunctionMode):
    """Record the operations that would meet a host tensor with a device tensor on a GPU (`faults`)."""

    def __init__(self):
        super().__init__()
        self.faults: dict[str, str] = {}  # where -> what

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        self._check(func, args, inputs)
        out = func(*args, **kwargs)
        target = _target(func, args, kwargs)
        if target is None:
            target = "device" if any(not on_host(t) for t in inputs) else "host"
        if func is torch.Tensor.to and out is args[0] and not isinstance(out, torch.nn.Parameter):
            out = out.view_as(out)  # on the CPU `.to(device)` returns its input: keep the input's own place
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                tensor.__dict__["_virtual_host"] = target == "host"
        return out

    def _check(self, func, args, inputs) -> None:
        host = [t for t in inputs if t.dim() and on_host(t)]
        device = [t for t in inputs if not on_host(t)]
        if not host or not device or func in MOVES:
            return
        if func in INDEXING and not on_host(args[0]):
            value = args[2] if func is torch.Tensor.__setitem__ else None
            if not (isinstance(value, torch.Tensor) and value.dim() and on_host(value)):
                return  # a device tensor indexed by host indices: CUDA moves the indices
        where = next((f"{frame.filename}:{frame.lineno}" for frame in reversed(traceback.extract_stack()[:-2])
                      if "/tandem/" in frame.filename and "/tests/" not in frame.filename), "outside tandem")
        self.faults.setdefault(where, f"{getattr(func, '__qualname__', func)}: a host tensor meets a device tensor")


@pytest.fixture
def every_step_on_a_virtual_device(monkeypatch):
    """The one RL trainer's `train` (rollouts, scores, advantages, updates, evaluations, the save) under the watch."""
    from tandem.trainers.online import OnlineTrainer

    watch = VirtualDevice()
    train = OnlineTrainer.train

    def watched(self):
        with watch:
            return train(self)
    monkeypatch.setattr(OnlineTrainer, "train", watched)
    return watch
