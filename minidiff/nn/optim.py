r"""Optimizers (state per parameter object), gradient clipping, a learning-rate schedule, and EMA.

All updates are in place on ``p.data`` and use Python-float coefficients, so float32 parameters stay
float32 (a NumPy float64 scalar would promote on NumPy 2 and CuPy).
"""
from __future__ import annotations

import math

from .. import backend
from .._validate import check_array, check_int, check_real
from .module import Module, Parameter

MAX_LR = 1e3  # larger steps are always a mistake (parameters of size ~1 jump by >= 1000)

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm", "warmup_cosine_lr", "EMA"]


def _param_list(params):
    if isinstance(params, (Module, Parameter, str, bytes)) or not hasattr(params, "__iter__"):
        raise TypeError(f"params must be an iterable of Parameters (model.parameters()); got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError("params is empty: pass model.parameters()")
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"params must be Parameter objects (model.parameters()); got {type(p).__name__}")
    if len({id(p) for p in params}) != len(params):
        raise ValueError("params lists the same Parameter twice")
    return params


def _check_state_arrays(name, saved: dict, expected: dict):
    if not isinstance(saved, dict):
        raise TypeError(f"{name} must be a dict of arrays; got {type(saved).__name__}")
    if set(saved) != set(expected):
        raise ValueError(f"{name}: keys {sorted(saved)} do not match the expected {sorted(expected)}")
    for k, ref in expected.items():
        check_array(saved[k], f"{name}[{k!r}]", shape=ref.shape)  # float, finite, same shape


class _Optimizer:
    """Common parts: the parameter list, ``lr`` (settable), ``step_count``, per-parameter ``state``
    (a list of dicts aligned with ``params``), ``zero_grad`` and (de)serialisation."""

    _state_keys: tuple = ()

    def __init__(self, params, lr: float):
        self.params = _param_list(params)
        self.lr = lr
        self.step_count = 0
        self.state = [{k: backend.get_xp(p.data).zeros_like(p.data) for k in self._state_keys}
                      for p in self.params]

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real(value, "lr", 0.0, MAX_LR)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad[...] = 0.0

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """``{"step": int, "hyperparameters": {...}, "state": [{name: array copy}, ...]}`` (one dict per
        parameter, in ``params`` order)."""
        return {"step": self.step_count, "hyperparameters": self.hyperparameters(),
                "state": [{k: v.copy() for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state: dict) -> None:
        """Restore step count, hyperparameters and buffers; validated fully before anything is written."""
        if not isinstance(state, dict):
            raise TypeError(f"optimizer state must be a dict; got {type(state).__name__}")
        for key in ("step", "hyperparameters", "state"):
            if key not in state:
                raise ValueError(f"optimizer state is missing {key!r}")
        if state.get("class", type(self).__name__) != type(self).__name__:
            raise ValueError(f"optimizer state is for {state['class']}; this is {type(self).__name__}")
        if not isinstance(state["state"], (list, tuple)) or not isinstance(state["hyperparameters"], dict):
            raise TypeError("optimizer state: 'state' must be a list of dicts and 'hyperparameters' a dict")
        step = check_int(state["step"], "optimizer state step", minimum=0)
        if len(state["state"]) != len(self.state):
            raise ValueError(f"optimizer state has {len(state['state'])} parameters; expected {len(self.state)}")
        for i, (saved, mine) in enumerate(zip(state["state"], self.state)):
            _check_state_arrays(f"optimizer state[{i}]", saved, mine)
        hyper = dict(state["hyperparameters"])
        if set(hyper) != set(self.hyperparameters()):
            raise ValueError(f"optimizer hyperparameters {sorted(hyper)} do not match {sorted(self.hyperparameters())}")
        type(self)([Parameter(self.params[0].data[:0].copy())], **hyper)  # validates the values, writes nothing
        for saved, mine in zip(state["state"], self.state):
            for k, v in mine.items():
                v[...] = backend.asarray(saved[k], dtype=v.dtype, xp=backend.get_xp(v))
        self.step_count = step
        for k, v in hyper.items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)


class SGD(_Optimizer):
    r"""SGD with heavy-ball momentum (PyTorch's form): ``v = momentum v + g``, ``p = p - lr v``.
    ``momentum=0`` is plain gradient descent."""

    _state_keys = ("velocity",)

    def __init__(self, params, lr: float, momentum: float = 0.9):
        self.momentum = check_real(momentum, "momentum", 0.0, 1.0, high_open=True)
        super().__init__(params, lr)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum}

    def step(self) -> None:
        self.step_count += 1
        for p, s in zip(self.params, self.state):
            v = s["velocity"]
            v *= self.momentum
            v += p.grad
            p.data -= self.lr * v


class Adam(_Optimizer):
    r"""Adam (Kingma & Ba 2015, Alg. 1), with optional L2 weight decay added to the gradient:

    ``g = grad + wd p``; ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
    """

    _state_keys = ("m", "v")
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be a pair (b1, b2) of floats in [0, 1); got {betas!r}")
        b1, b2 = (check_real(b, f"betas[{i}]", 0.0, 1.0, high_open=True) for i, b in enumerate(betas))
        self.betas = (b1, b2)
        self.eps = check_real(eps, "eps", 0.0, 1.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0, MAX_LR)
        super().__init__(params, lr)
        self._scratch = [backend.get_xp(p.data).empty_like(p.data) for p in self.params]

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def step(self) -> None:
        self.step_count += 1
        b1, b2 = self.betas
        t = self.step_count
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        step_size = self.lr / bc1
        inv_sqrt_bc2 = 1.0 / math.sqrt(bc2)
        for p, s, tmp in zip(self.params, self.state, self._scratch):
            xp = backend.get_xp(p.data)
            m, v, g = s["m"], s["v"], p.grad
            if self.weight_decay and not self._decoupled:
                g = g + self.weight_decay * p.data
            m *= b1
            xp.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2
            xp.multiply(g, g, out=tmp)
            tmp *= 1.0 - b2
            v += tmp
            xp.sqrt(v, out=tmp)
            tmp *= inv_sqrt_bc2
            tmp += self.eps  # sqrt(v_hat) + eps
            xp.divide(m, tmp, out=tmp)
            tmp *= step_size  # lr m_hat / (sqrt(v_hat) + eps)
            if self.weight_decay and self._decoupled:
                p.data *= 1.0 - self.lr * self.weight_decay
            p.data -= tmp


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay,
    ``p = p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)``; default ``weight_decay=0.01``."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def clip_grad_norm(params, max_norm: float) -> float:
    r"""Scale all gradients by ``min(1, max_norm / ||g||)`` where ``||g||`` is the global L2 norm over
    every parameter; returns ``||g||`` before clipping, as a Python float: one device -> host sync
    in all, the squared norms being summed on the device (docs/backends.md §1)."""
    params = _param_list(params)
    if not (isinstance(max_norm, float) and max_norm == float("inf")):  # inf: measure only, never clip
        max_norm = check_real(max_norm, "max_norm", 0.0, low_open=True)
    xp = backend.get_xp(params[0].grad)
    sq = [xp.vdot(p.grad.reshape(-1), p.grad.reshape(-1)) for p in params]  # 0-d device arrays
    total = math.sqrt(float(xp.sum(xp.stack(sq))))  # the one sync
    if total > max_norm:
        scale = max_norm / total
        for p in params:
            p.grad *= scale
    return total


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    r"""Linear warm-up then cosine decay (Loshchilov & Hutter 2017, without restarts):

    ``lr = base_lr (step + 1) / warmup_steps`` for ``step < warmup_steps``; afterwards, with
    ``q = clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0, 1)``,
    ``lr = min_lr + (base_lr - min_lr) (1 + cos(pi q)) / 2``.
    """
    step = check_int(step, "step", minimum=0)
    total_steps = check_int(total_steps, "total_steps", minimum=1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
    base_lr = check_real(base_lr, "base_lr", 0.0, MAX_LR)
    min_lr = check_real(min_lr, "min_lr", 0.0, MAX_LR)
    if step < warmup_steps:
        return float(base_lr) * (step + 1) / warmup_steps
    q = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    return float(min_lr) + (float(base_lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * q))


class EMA:
    r"""Exponential moving average of a model's parameters (Polyak averaging; Song & Ermon 2020 Sec. 3.5
    for diffusion): ``shadow = decay shadow + (1 - decay) p`` after each ``update()``.

    Separate and explicit: the model keeps training its own weights; ``copy_to(model)`` writes the
    averages into a model (for sampling, typically a second instance built from the same config).
    """

    def __init__(self, model: Module, decay: float = 0.999):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a minidiff.nn Module; got {type(model).__name__}")
        self.decay = check_real(decay, "decay", 0.0, 1.0, high_open=True)
        self.model = model
        self.num_updates = 0
        self.shadow = {name: p.data.copy() for name, p in model.named_parameters()}

    def update(self) -> None:
        d = self.decay
        for name, p in self.model.named_parameters():
            s = self.shadow[name]
            s *= d
            s += (1.0 - d) * p.data
        self.num_updates += 1

    def copy_to(self, model: Module = None) -> None:
        """Write the averages into ``model`` (default: the tracked model); names and shapes must match."""
        model = self.model if model is None else model
        if not isinstance(model, Module):
            raise TypeError(f"model must be a minidiff.nn Module; got {type(model).__name__}")
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.copy() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"EMA state must be a dict; got {type(state).__name__}")
        for key in ("decay", "num_updates", "shadow"):
            if key not in state:
                raise ValueError(f"EMA state is missing {key!r}")
        _check_state_arrays("EMA shadow", state["shadow"], self.shadow)
        decay = check_real(state["decay"], "EMA state decay", 0.0, 1.0, high_open=True)
        num_updates = check_int(state["num_updates"], "EMA state num_updates", minimum=0)
        for k, v in self.shadow.items():
            v[...] = backend.asarray(state["shadow"][k], dtype=v.dtype, xp=backend.get_xp(v))
        self.decay, self.num_updates = decay, num_updates
