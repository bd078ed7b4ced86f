r"""Finite-difference check of a module's hand-written backward pass.

With a random upstream gradient ``g`` (an all-ones ``g`` can hide a zero or transposed backward), the
scalar ``f(theta) = sum(module(inputs) * g)`` has gradient ``backward(g)`` w.r.t. the inputs and the
accumulated ``.grad`` w.r.t. each parameter. Each is compared with central differences

    ``(f(a + eps e_i) - f(a - eps e_i)) / (2 eps)``      (truncation O(eps^2), roundoff O(u |f| / eps))

in float64. Small arrays are checked entry by entry; larger ones on ``max_entries`` random entries plus
``n_directions`` random directions v (``(f(a + eps v) - f(a - eps v)) / (2 eps)`` against ``<grad, v>``),
which sees an error anywhere in the array with probability one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import backend
from .._validate import check_array, check_bool, check_positive_int, check_real, check_rng
from .module import Module

__all__ = ["gradcheck", "GradcheckResult"]


@dataclass
class GradcheckResult:
    """``max_rel_error`` over everything checked; ``errors`` maps ``"input<i>"`` and each parameter
    name to its relative error ``||num - ana|| / max(||num||, ||ana||)``."""

    max_rel_error: float
    errors: dict = field(default_factory=dict)

    def worst(self, n: int = 5):
        """The ``n`` largest errors as (name, error) pairs, for a report."""
        return sorted(self.errors.items(), key=lambda kv: -kv[1])[:n]

    def __float__(self):
        return self.max_rel_error


def _rel(num, ana) -> float:
    xp = backend.get_xp(num, ana)
    diff = float(xp.linalg.norm(num - ana))
    scale = max(float(xp.linalg.norm(num)), float(xp.linalg.norm(ana)))
    return 0.0 if scale == 0.0 else diff / scale


def gradcheck(module: Module, inputs, kwargs=None, eps: float = 1e-6, seed=0, max_entries: int = 64,
              n_directions: int = 3, check_inputs: bool = True) -> GradcheckResult:
    """Compare ``module.backward`` with central differences, for the inputs and every parameter.

    Parameters
    ----------
    module : a Module whose parameters are all float64.
    inputs : an array or tuple of float64 arrays passed positionally to ``module.forward``; ``backward``
        must return one gradient per input (a tuple when there are several).
    kwargs : dict of extra, non-differentiated keyword arguments for forward (e.g. ``sigma``, ``y``).
    eps : finite-difference step (1e-6 balances O(eps^2) truncation and O(1e-16/eps) roundoff).
    seed : seed or Generator for the upstream gradient and the sampled entries/directions.
    max_entries, n_directions : arrays with more entries than ``max_entries`` are checked on that many
        random entries plus ``n_directions`` random directions.
    check_inputs : set False for modules whose inputs are not differentiated.

    The module's parameter gradients are zeroed first and hold ``backward(g)`` afterwards; parameter
    values are restored exactly.
    """
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minidiff.nn Module; got {type(module).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict or None; got {type(kwargs).__name__}")
    kwargs = {} if kwargs is None else dict(kwargs)
    eps = check_real(eps, "eps", 1e-12, 1e-1)  # smaller: roundoff swamps the difference; larger: truncation
    max_entries = check_positive_int(max_entries, "max_entries", maximum=10**6)
    n_directions = check_positive_int(n_directions, "n_directions", minimum=0, maximum=10**4)
    check_inputs = check_bool(check_inputs, "check_inputs")
    single = not isinstance(inputs, (tuple, list))
    inputs = list((inputs,) if single else inputs)
    for i, a in enumerate(inputs):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"inputs[{i}] must be an array; got {type(a).__name__}")
        if check_inputs:
            inputs[i] = check_array(a, f"inputs[{i}]")  # float32/float64 (float64 checked below), finite
    if not inputs:
        raise ValueError("inputs must hold at least one array")
    xp = backend.get_xp(*inputs)
    inputs = [xp.array(a, copy=True) for a in inputs]  # contiguous private copies
    for i, a in enumerate(inputs):
        if check_inputs and a.dtype != xp.float64:
            raise TypeError(f"gradcheck needs float64 inputs; input {i} is {a.dtype}")
    named = list(module.named_parameters())
    for name, p in named:
        if p.data.dtype != xp.float64:
            raise TypeError(f"gradcheck needs a float64 module; parameter {name!r} is {p.data.dtype}")
    rng = check_rng(seed, "seed", xp=xp)

    out = module(*inputs, **kwargs)
    g = rng.standard_normal(out.shape, dtype=xp.float64)
    module.zero_grad()
    grads_in = module.backward(g)
    if not isinstance(grads_in, tuple):
        grads_in = (grads_in,)
    grads_in = [None if d is None else xp.array(d, copy=True) for d in grads_in]
    grads_p = {name: p.grad.copy() for name, p in named}

    def f() -> float:
        return float((module(*inputs, **kwargs) * g).sum())

    def check(a, ana) -> float:
        flat = a.reshape(-1)  # a view: a is contiguous
        ana = ana.reshape(-1)
        n = flat.size
        if n <= max_entries:
            idx = range(n)
        else:
            idx = [int(i) for i in backend.to_numpy(rng.integers(0, n, size=max_entries))]
        num = []
        for i in idx:
            old = float(flat[i])
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num.append((fp - fm) / (2.0 * eps))
        ana_sel = ana[xp.asarray(list(idx))] if n > max_entries else ana
        err = _rel(xp.asarray(num, dtype=xp.float64), ana_sel)
        if n > max_entries:
            saved = flat.copy()
            for _ in range(n_directions):
                v = rng.standard_normal(n, dtype=xp.float64)
                flat += eps * v
                fp = f()
                flat[...] = saved - eps * v
                fm = f()
                flat[...] = saved
                num_d = (fp - fm) / (2.0 * eps)
                ana_d = float(ana @ v)
                scale = max(abs(num_d), abs(ana_d))
                err = max(err, 0.0 if scale == 0.0 else abs(num_d - ana_d) / scale)
        return err

    errors = {}
    if check_inputs:
        if len(grads_in) != len(inputs):
            raise ValueError(f"backward returned {len(grads_in)} gradients for {len(inputs)} inputs")
        for i, (a, d) in enumerate(zip(inputs, grads_in)):
            if d is None or tuple(d.shape) != tuple(a.shape):
                raise ValueError(f"backward's gradient {i} has shape {getattr(d, 'shape', None)}; "
                                 f"expected {tuple(a.shape)}")
            errors[f"input{i}"] = check(a, d)
    for name, p in named:
        if not p.data.flags.c_contiguous:
            raise ValueError(f"parameter {name!r} is not contiguous")
        errors[name] = check(p.data, grads_p[name])
    worst = max(errors.values(), default=0.0)
    if math.isnan(worst):
        worst = float("inf")
    return GradcheckResult(worst, errors)
