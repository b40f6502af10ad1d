"""A network's weights as one flat float32 vector (what clients send and receive).

A flat vector crosses Ray's object store as a single zero-copy numpy buffer; FedAvg over
such vectors is :func:`fcl_ray.protocol.aggregation.fedavg`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class WeightLayout:
    """Names, shapes and dtypes of a state_dict, to flatten it and restore it."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.names = list(state)
        self.shapes = [tuple(t.shape) for t in state.values()]
        self.dtypes = [t.dtype for t in state.values()]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.total = sum(self.sizes)

    def flatten(self, state: dict[str, torch.Tensor]) -> np.ndarray:
        return torch.cat([state[n].detach().reshape(-1).float().cpu() for n in self.names]).numpy()

    def unflatten(self, vector: np.ndarray) -> dict[str, torch.Tensor]:
        if vector.shape != (self.total,):
            raise ValueError(f"weight vector has shape {vector.shape}, layout expects ({self.total},)")
        flat = torch.from_numpy(np.array(vector, dtype=np.float32, copy=True))
        out, start = {}, 0
        for name, shape, dtype, size in zip(self.names, self.shapes, self.dtypes, self.sizes):
            piece = flat[start:start + size].reshape(shape)
            out[name] = piece.round().to(dtype) if not dtype.is_floating_point else piece.to(dtype)
            start += size
        return out


class FlatWeights:
    """The weights of some networks living in one flat float32 buffer, in a layout's order.

    Every float32, contiguous parameter and buffer of ``networks`` (the modules whose
    ``state_dict`` entries, prefixed ``<network>.``, are ``layout.names``) is re-pointed to its
    slice of :attr:`flat` (``tensor.data = view``: the Parameter objects, hence the optimiser's
    references to them, stay the same). Loading the global weights is then one copy into
    :attr:`flat` and sending them one copy out, instead of a tensor-by-tensor unflatten +
    ``load_state_dict`` and ``torch.cat``. Anything else (BatchNorm's integer step counter, a
    channels-last or non-float32 tensor) is copied to and from its slice one by one, as
    :class:`WeightLayout` does. The numbers are the same as with :class:`WeightLayout`.
    """

    def __init__(self, networks: dict[str, nn.Module], layout: WeightLayout):
        self.layout = layout
        tensors = {}
        for name, net in networks.items():
            prefix = f"{name}." if name else ""
            tensors.update({prefix + k: t for k, t in net.named_parameters()})
            tensors.update({prefix + k: t for k, t in net.named_buffers()})
        device = tensors[layout.names[0]].device
        self.tensors = {name: tensors[name] for name in layout.names}   # the live tensors
        self.flat = torch.empty(layout.total, dtype=torch.float32, device=device)
        self.copied: list[tuple[torch.Tensor, slice]] = []   # tensors that are not views
        start = 0
        with torch.no_grad():
            for name, size in zip(layout.names, layout.sizes):
                tensor, piece = tensors[name], slice(start, start + size)
                if tensor.dtype == torch.float32 and tensor.is_contiguous():
                    self.flat[piece].copy_(tensor.reshape(-1))
                    tensor.data = self.flat[piece].view(tensor.shape)
                else:
                    self.copied.append((tensor, piece))
                start += size

    def load(self, vector: np.ndarray) -> None:
        """Set every weight from a vector laid out like :attr:`flat` (e.g. the global one)."""
        if vector.shape != (self.layout.total,):
            raise ValueError(f"weight vector has shape {vector.shape}, layout expects "
                             f"({self.layout.total},)")
        with torch.no_grad():
            if self.flat.device.type == "cpu":
                self.flat.numpy()[:] = vector       # one copy (the vector may be read-only)
            else:
                self.flat.copy_(torch.from_numpy(np.array(vector, dtype=np.float32)))
            for tensor, piece in self.copied:
                value = self.flat[piece].reshape(tensor.shape)
                tensor.copy_(value if tensor.dtype.is_floating_point else value.round())

    def vector(self) -> np.ndarray:
        """A copy of the current weights as one float32 numpy vector (what a client sends)."""
        with torch.no_grad():
            for tensor, piece in self.copied:
                self.flat[piece].copy_(tensor.detach().reshape(-1).float())
            return self.flat.detach().to("cpu", copy=True).numpy()
