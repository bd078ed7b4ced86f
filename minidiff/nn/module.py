"""The Module base: parameters with explicit gradients, one forward cache, a hand-written backward.

A module owns :class:`Parameter` objects (``.data`` and ``.grad``, same shape and dtype) created at
construction from explicit shapes. ``forward(...)`` stores exactly one cache (overwritten on every call);
``backward(dy)`` is the vector-Jacobian product: it returns the gradient with respect to the input(s)
and *accumulates* (``+=``) each parameter's gradient. ``zero_grad()`` clears them.

Parameters and sub-modules are discovered from the instance attributes, in assignment order: a
``Parameter`` attribute ``w`` is named ``"w"``, a sub-module ``blk`` contributes ``"blk.<name>"``, and a
list/tuple of modules ``blocks`` contributes ``"blocks.<i>.<name>"``.
"""
from __future__ import annotations

from .. import backend
from .._validate import check_array

__all__ = ["Parameter", "Module"]


class Parameter:
    """A trainable array ``data`` with its gradient ``grad`` (same shape, dtype and backend)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = backend.get_xp(data).zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class. Subclasses define ``forward(...)`` and ``backward(dy)``; ``model(x)`` calls forward."""

    training = True

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------------------------------
    def _children(self):
        """(name, Parameter | Module) pairs of the direct attributes, in assignment order."""
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{name}.{i}", v

    def named_parameters(self, prefix: str = ""):
        """Yield ``(dotted_name, Parameter)`` for every parameter of this module and its sub-modules."""
        for name, value in self._children():
            full = f"{prefix}{name}"
            if isinstance(value, Parameter):
                yield full, value
            else:
                yield from value.named_parameters(prefix=full + ".")

    def parameters(self):
        """Yield every Parameter (each exactly once, in a fixed order)."""
        for _, p in self.named_parameters():
            yield p

    def modules(self):
        """Yield this module and all sub-modules, depth first."""
        yield self
        for _, value in self._children():
            if isinstance(value, Module):
                yield from value.modules()

    def num_parameters(self) -> int:
        return sum(int(p.data.size) for p in self.parameters())

    # -- state ------------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0.0

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self) -> dict:
        """``{name: copy of data}`` on the parameters' backend."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into the parameters. Keys and shapes must match exactly; values are cast to each
        parameter's dtype and moved to its backend. Everything is validated before anything is written,
        so a mismatched dict never half-loads."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays; got {type(state).__name__}")
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match: missing {missing}, unexpected {unexpected}")
        staged = {}
        for name, p in params.items():
            value = check_array(state[name], f"state_dict[{name!r}]", shape=p.data.shape)  # float, finite
            staged[name] = backend.asarray(value, dtype=p.data.dtype, xp=backend.get_xp(p.data))
        for name, p in params.items():
            p.data[...] = staged[name]
