"""Checkpoints: one ``.npz`` of host arrays plus a JSON header, written atomically, validated on load.

Layout of the archive (NumPy's ``.npz``, read with ``allow_pickle=False``):

- ``model/<param name>``: the model's parameters;
- ``optim/<i>/<buffer>``: the optimizer's per-parameter buffers (i = index in ``optimizer.params``);
- ``ema/<param name>``: the EMA shadow weights;
- ``__meta__``: a 0-d unicode array holding JSON: format name and version, model class and
  ``model.config``, the user's ``config`` and ``extra``, optimizer/EMA scalars, and the shape and dtype
  of every array (checked against the arrays on load).

``save`` refuses (ValueError) to write any array that holds NaN/inf, so the last good checkpoint is
never replaced by a diverged one; it writes to a temporary file in the destination directory and
``os.replace``-s it over the target, so a failed or killed save leaves any existing file untouched
(temporary files left by a killed process are removed by the next save to the same path). Files get
the user's umask (``mkstemp`` alone would make them 0600).

``load`` checks every ``.npy`` header against the archive member's size before reading any data, the
JSON header against the arrays, every model-config integer against the stored sizes (a tampered
header cannot make it allocate a huge model), and every float array for NaN/inf, before building
anything: a truncated, tampered, wrong-version or mismatched file raises ValueError (or TypeError)
and never half-loads.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import numbers
import os
import tempfile
import zipfile
from dataclasses import dataclass

from .. import backend
from .._validate import check_path_read, check_path_write
from .models import MODELS, build_model
from .module import Module
from .optim import EMA, _Optimizer

__all__ = ["save", "load", "resolve", "Checkpoint", "NonFiniteCheckpointError", "FORMAT", "VERSION", "SHIPPED"]

FORMAT = "minidiff-checkpoint"
VERSION = 1

# The host array module, reached through the backend (minidiff.nn never imports numpy itself).
_host = backend.get_xp(backend.to_numpy(0.0))


class NonFiniteCheckpointError(ValueError):
    """:func:`save` was asked to write NaN/inf weights or buffers; nothing was written."""


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

    def sampling_model(self) -> Module:
        """``model`` with the stored EMA weights copied in (the weights training meant for sampling; the
        raw weights when no EMA was stored), in eval mode."""
        if self.ema_state is not None:
            ema = EMA(self.model)
            ema.load_state_dict(self.ema_state)
            ema.copy_to(self.model)
        return self.model.eval()


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


def _umask() -> int:
    mask = os.umask(0o022)  # read it (the only portable way), then put it back at once
    os.umask(mask)
    return mask


def _clean_stale_tmp(path: str) -> None:
    """Remove temporary files of earlier saves to ``path`` that were killed before ``os.replace``."""
    directory, base = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(directory), "." + glob.escape(base) + ".*.tmp")):
        try:
            os.remove(stale)
        except OSError:
            pass  # another process removed it first, or it is not ours to remove


def save(path, model: Module, optimizer=None, ema=None, config=None, extra=None) -> None:
    """Write ``model`` (and optionally optimizer state, EMA, a user config and extra info such as the
    step, seed and loss history) to ``path`` atomically. Refuses (ValueError) if any array holds NaN or
    inf: an existing file at ``path`` is then left as it was."""
    kind = type(model).__name__
    if not isinstance(model, Module) or kind not in MODELS or not hasattr(model, "config"):
        raise TypeError(f"model must be one of {sorted(MODELS)}; got {kind}")
    if optimizer is not None and not isinstance(optimizer, _Optimizer):
        raise TypeError(f"optimizer must be a minidiff.nn optimizer (SGD, Adam, AdamW) or None; got {type(optimizer).__name__}")
    if ema is not None and not isinstance(ema, EMA):
        raise TypeError(f"ema must be a minidiff.nn.EMA or None; got {type(ema).__name__}")
    path = check_path_write(path, "path")
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
    bad = sorted(k for k, v in arrays.items() if not _host.isfinite(v).all())
    if bad:
        raise NonFiniteCheckpointError(f"not saving {path}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} hold NaN or inf "
                         "(the model diverged); any existing file there is left as it was")
    meta["arrays"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}
    arrays["__meta__"] = _host.array(json.dumps(meta))

    _clean_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            _host.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _check_members(path) -> None:
    """Every archive member is a ``.npy`` whose header (shape x itemsize) fits in the member's stored
    size, and none holds Python objects: checked before any array data is read or allocated."""
    fmt = _host.lib.format
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected archive member {info.filename!r}")
            with zf.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f"member {info.filename!r} has npy format version {version}")
            if dtype.hasobject:
                raise ValueError(f"member {info.filename!r} holds Python objects")
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise ValueError(f"member {info.filename!r} claims shape {shape} ({dtype}), more than its "
                                 f"{info.file_size} stored bytes")


def _read(path) -> tuple[dict, dict]:
    """All arrays and the parsed header; any unreadable, truncated or malformed file -> ValueError."""
    path = check_path_read(path, "path")
    try:
        _check_members(path)
        with _host.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reads every member now, so truncation shows here
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zipfile.LargeZipFile,
            SyntaxError, OverflowError, MemoryError, NotImplementedError) as exc:
        raise ValueError(f"{path}: not a readable minidiff checkpoint ({type(exc).__name__}: {exc})") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: not a minidiff checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: corrupted checkpoint header ({type(exc).__name__})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a minidiff checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta.get('version')!r} is not supported "
                         f"(this minidiff reads version {VERSION})")
    listed = meta.get("arrays")
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        raise ValueError(f"{path}: corrupted checkpoint header (no valid 'arrays' table)")
    if set(listed) != set(arrays):
        raise ValueError(f"{path}: arrays {sorted(set(arrays) ^ set(listed))} do not match the header")
    for k, info in listed.items():
        if list(arrays[k].shape) != info.get("shape") or str(arrays[k].dtype) != info.get("dtype"):
            raise ValueError(f"{path}: array {k!r} is {arrays[k].dtype}{list(arrays[k].shape)}; "
                             f"header says {info.get('dtype')}{info.get('shape')}")
        if arrays[k].dtype.kind != "f":
            raise ValueError(f"{path}: array {k!r} has dtype {arrays[k].dtype}; checkpoints hold float arrays")
        if not _host.isfinite(arrays[k]).all():
            raise ValueError(f"{path}: array {k!r} holds NaN or inf (saved from a diverged model?)")
    for key, kind in (("model_config", dict), ("optimizer", (dict, type(None))), ("ema", (dict, type(None)))):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path}: corrupted checkpoint header ({key!r} is {type(meta.get(key)).__name__})")
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


def _check_config_sizes(path, config: dict, arrays: dict) -> None:
    """Every integer of the stored model config (widths, channels, class counts, ...; the seed aside) is
    at most the largest stored array's size, so a tampered config cannot make ``load`` build a model
    far larger than the file before the shapes are compared."""
    limit = max((a.size for a in arrays.values()), default=0)

    def walk(v, where):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, numbers.Integral):
            if not -1 <= v <= limit:
                raise ValueError(f"{path}: model config {where} = {v} does not fit the stored arrays "
                                 f"(largest holds {limit} values)")
        elif isinstance(v, (list, tuple)):
            for i, u in enumerate(v):
                walk(u, f"{where}[{i}]")
        elif isinstance(v, dict):
            for k, u in v.items():
                walk(u, f"{where}.{k}")

    for k, v in config.items():
        if k != "seed":
            walk(v, k)


def load(path) -> Checkpoint:
    """Read, validate and rebuild a checkpoint written by :func:`save` (or a shipped one by name, see
    :func:`resolve`); arrays go to the default backend.
    Anything wrong with the file raises ValueError (TypeError for a path that is not a path)."""
    path = resolve(path)
    arrays, meta = _read(path)
    kind = meta.get("model_class")
    if not isinstance(kind, str) or kind not in MODELS:
        raise ValueError(f"{path}: unknown model class {kind!r}; known: {sorted(MODELS)}")
    _check_config_sizes(path, meta["model_config"], arrays)
    try:
        model = build_model({**meta["model_config"], "model": kind})
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
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
    if meta["optimizer"] is not None:
        info = meta["optimizer"]
        try:
            n = int(info["num_params"])
            if not 0 <= n <= len(arrays):
                raise ValueError(f"num_params {n} out of range")
            buffers = [dict() for _ in range(n)]
            for k, v in arrays.items():
                if k.startswith("optim/"):
                    _, i, name = k.split("/", 2)
                    if not 0 <= int(i) < len(buffers):
                        raise ValueError(f"optimizer array {k!r} is out of range")
                    buffers[int(i)][name] = backend.asarray(v)  # host -> default backend
            optimizer_state = {"class": str(info["class"]), "step": int(info["step"]),
                               "hyperparameters": dict(info["hyperparameters"]), "state": buffers}
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ValueError(f"{path}: corrupted optimizer header ({type(exc).__name__}: {exc})") from exc
    ema_state = None
    if meta["ema"] is not None:
        shadow = {k[len("ema/"):]: backend.asarray(v) for k, v in arrays.items() if k.startswith("ema/")}
        if set(shadow) != set(params):
            raise ValueError(f"{path}: EMA weights do not match the model's parameters")
        try:
            ema_state = {"decay": float(meta["ema"]["decay"]), "num_updates": int(meta["ema"]["num_updates"]),
                         "shadow": shadow}
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{path}: corrupted EMA header ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(model=model, optimizer_state=optimizer_state, ema_state=ema_state,
                      config=meta["config"], extra=meta["extra"], model_class=kind,
                      model_config=meta["model_config"])
