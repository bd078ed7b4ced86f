"""Checkpoints: one ``.npz`` of host arrays plus a JSON header, written atomically, validated on load.

Layout of the archive (NumPy's ``.npz``, read with ``allow_pickle=False``):

- ``model/<param name>``: the model's parameters;
- ``optim/<i>/<buffer>``: the optimizer's per-parameter buffers (i = index in ``optimizer.params``);
- ``ema/<param name>``: the EMA shadow weights;
- ``__meta__``: a 0-d unicode array holding JSON: format name and version, model class and
  ``model.config``, the user's ``config`` and ``extra``, optimizer/EMA scalars, and the shape and dtype
  of every array (checked against the arrays on load).

``save`` writes to a temporary file in the destination directory and ``os.replace``-s it over the
target, so a failed save leaves any existing file untouched. ``load`` reads and checks everything
before building anything, so a truncated, wrong-version or mismatched file raises ValueError and
never half-loads.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass

from .. import backend
from .models import MODELS, build_model
from .module import Module

__all__ = ["save", "load", "resolve", "Checkpoint", "FORMAT", "VERSION", "SHIPPED"]

FORMAT = "minidiff-checkpoint"
VERSION = 1

# The host array module, reached through the backend (minidiff.nn never imports numpy itself).
_host = backend.get_xp(backend.to_numpy(0.0))


@dataclass
class Checkpoint:
    """What :func:`load` returns. ``model`` is rebuilt from the stored class and config, with weights
    loaded on the default backend; ``optimizer_state``/``ema_state`` feed ``load_state_dict`` of a new
    optimizer/EMA (or are None); ``config`` and ``extra`` are the JSON-able dicts given to :func:`save`."""

    model: Module
    optimizer_state: dict | None
    ema_state: dict | None
    config: dict | None
    extra: dict | None
    model_class: str
    model_config: dict


def _jsonable(obj, name):
    if obj is None:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable (numbers, strings, lists, dicts): {exc}") from exc
    return obj


def save(path, model: Module, optimizer=None, ema=None, config=None, extra=None) -> None:
    """Write ``model`` (and optionally optimizer state, EMA, a user config and extra info such as the
    step, seed and loss history) to ``path`` atomically."""
    kind = type(model).__name__
    if kind not in MODELS or not hasattr(model, "config"):
        raise TypeError(f"model must be one of {sorted(MODELS)}; got {kind}")
    meta = {"format": FORMAT, "version": VERSION, "model_class": kind,
            "model_config": _jsonable(model.config, "model.config"),
            "config": _jsonable(config, "config"), "extra": _jsonable(extra, "extra"),
            "optimizer": None, "ema": None}
    arrays = {f"model/{name}": backend.to_numpy(p.data) for name, p in model.named_parameters()}  # device -> host
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {"class": type(optimizer).__name__, "step": int(state["step"]),
                             "hyperparameters": state["hyperparameters"], "num_params": len(state["state"])}
        for i, buffers in enumerate(state["state"]):
            for k, v in buffers.items():
                arrays[f"optim/{i}/{k}"] = backend.to_numpy(v)  # device -> host
    if ema is not None:
        state = ema.state_dict()
        meta["ema"] = {"decay": state["decay"], "num_updates": int(state["num_updates"])}
        for k, v in state["shadow"].items():
            arrays[f"ema/{k}"] = backend.to_numpy(v)  # device -> host
    meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}
    arrays["__meta__"] = _host.array(json.dumps(meta))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _host.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(path) -> tuple[dict, dict]:
    """All arrays and the parsed header; any unreadable, truncated or malformed file -> ValueError."""
    try:
        with _host.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reads every member now, so truncation shows here
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable minidiff checkpoint ({type(exc).__name__}: {exc})") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: not a minidiff checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupted checkpoint header ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a minidiff checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta.get('version')!r} is not supported "
                         f"(this minidiff reads version {VERSION})")
    listed = meta.get("arrays", {})
    if set(listed) != set(arrays):
        raise ValueError(f"{path}: arrays {sorted(set(arrays) ^ set(listed))} do not match the header")
    for k, info in listed.items():
        if list(arrays[k].shape) != list(info["shape"]) or str(arrays[k].dtype) != info["dtype"]:
            raise ValueError(f"{path}: array {k!r} is {arrays[k].dtype}{list(arrays[k].shape)}; "
                             f"header says {info['dtype']}{info['shape']}")
    return arrays, meta


# Checkpoints shipped inside the package (minidiff/weights/), loadable by name wherever a path is accepted.
SHIPPED = {"text-glyphs": "text-glyphs.npz", "glyph-reader": "glyph-reader.npz"}
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def resolve(path):
    """``path`` itself, or the file of a shipped checkpoint when ``path`` is one of the names in
    :data:`SHIPPED` (``"text-glyphs"``, ``"glyph-reader"``) and no file of that name exists."""
    if isinstance(path, str) and path in SHIPPED and not os.path.exists(path):
        return os.path.join(WEIGHTS_DIR, SHIPPED[path])
    return path


def load(path) -> Checkpoint:
    """Read, validate and rebuild a checkpoint written by :func:`save` (or a shipped one by name, see
    :func:`resolve`); arrays go to the default backend."""
    path = resolve(path)
    arrays, meta = _read(path)
    kind = meta.get("model_class")
    if kind not in MODELS:
        raise ValueError(f"{path}: unknown model class {kind!r}; known: {sorted(MODELS)}")
    try:
        model = build_model({"model": kind, **meta["model_config"]})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot rebuild {kind} from its stored config: {exc}") from exc
    state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    params = dict(model.named_parameters())
    for name, p in params.items():
        if name in state and str(state[name].dtype) != str(p.data.dtype):
            raise ValueError(f"{path}: parameter {name!r} is stored as {state[name].dtype}; the model is {p.data.dtype}")
    try:
        model.load_state_dict(state)  # validates keys and shapes before writing
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc

    optimizer_state = None
    if meta.get("optimizer") is not None:
        info = meta["optimizer"]
        buffers = [dict() for _ in range(int(info["num_params"]))]
        for k, v in arrays.items():
            if k.startswith("optim/"):
                _, i, name = k.split("/", 2)
                if not 0 <= int(i) < len(buffers):
                    raise ValueError(f"{path}: optimizer array {k!r} is out of range")
                buffers[int(i)][name] = backend.asarray(v)  # host -> default backend
        optimizer_state = {"class": info["class"], "step": info["step"],
                           "hyperparameters": info["hyperparameters"], "state": buffers}
    ema_state = None
    if meta.get("ema") is not None:
        shadow = {k[len("ema/"):]: backend.asarray(v) for k, v in arrays.items() if k.startswith("ema/")}
        if set(shadow) != set(params):
            raise ValueError(f"{path}: EMA weights do not match the model's parameters")
        ema_state = {"decay": meta["ema"]["decay"], "num_updates": meta["ema"]["num_updates"], "shadow": shadow}
    return Checkpoint(model=model, optimizer_state=optimizer_state, ema_state=ema_state,
                      config=meta.get("config"), extra=meta.get("extra"), model_class=kind,
                      model_config=meta["model_config"])
