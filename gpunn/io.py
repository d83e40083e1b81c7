"""Saving tensors and whole training states as safetensors: data only, never code.

`save`/`load` write and read tensors: a flat dict of them as a plain safetensors file, or a nested
structure of dicts, lists, tensors, numbers and strings (PyTorch's `{"model": ..., "optimizer":
..., "epoch": 3}`) with its shape as JSON in the metadata. `save_checkpoint`/`load_checkpoint` put
everything a run needs to continue exactly as if it had never stopped into one file: the
model's tensors, the optimizer's and scheduler's state, gpunn's random generator and the user's
own values (epoch, step, the DataLoader's state_dict, ...). Tensors are stored as tensors; the
rest of each state_dict is JSON in the file's `__metadata__`, with every tensor replaced by a
reference to its stored name (`model.<name>`, `optimizer.state.<i>.<name>`). Nothing is ever
unpickled, and the write is atomic, so an interrupted save leaves the previous file intact.
"""

import json

import numpy as np

from gpunn import backends, safetensors_format
from gpunn.device import device as as_device
from gpunn.random import get_rng_state, set_rng_state
from gpunn.tensor import Tensor

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint"]

_FORMAT = "gpunn.checkpoint/1"
_PARTS = ("model", "optimizer", "scheduler")


def save(obj, path, metadata=None):
    """Write tensors, or a nested structure holding them, to a safetensors file.

    A flat dict of name -> Tensor (or NumPy/backend array), such as `model.state_dict()`, is
    stored as it is: any safetensors reader loads it. Anything else PyTorch code saves (nested
    dicts, lists and tuples of tensors, numbers, strings, bools and None: `{"model":
    model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}`) keeps its tensors as
    tensors, named by their place (`model.fc.weight`, `optimizer.state.0.exp_avg`), and its shape
    as JSON in the file's metadata; `load` gives the same structure back. `metadata` is an optional
    dict of str -> str stored in the header.
    """
    if isinstance(obj, dict) and all(isinstance(k, str) and _is_array(v) for k, v in obj.items()):
        safetensors_format.save_file({name: _to_host(value) for name, value in obj.items()}, path, metadata)
        return
    if not isinstance(obj, (dict, list, tuple)) and not _is_array(obj):
        raise TypeError(f"save: expected tensors or a dict/list of them, got {type(obj).__name__}; "
                        f"{_what_to_save_instead(obj)}")
    header = dict(metadata or {})
    clash = sorted(set(header) & {_OBJECT_FORMAT_KEY, _OBJECT_KEY})
    if clash:
        raise ValueError(f"save: metadata key {clash[0]!r} is reserved by gpunn.save for the saved structure; "
                         "rename it")
    tensors = {}
    skeleton = _encode(obj, "tensor" if _is_array(obj) else "", tensors, who="save")
    header[_OBJECT_FORMAT_KEY], header[_OBJECT_KEY] = _OBJECT_FORMAT, json.dumps(skeleton)
    safetensors_format.save_file(tensors, path, header)


_OBJECT_FORMAT_KEY, _OBJECT_KEY, _OBJECT_FORMAT = "gpunn.format", "gpunn.object", "gpunn.object/1"


_CHECKPOINT_HINT = ("use gpunn.save_checkpoint(path, model=model, optimizer=optimizer, epoch=epoch) "
                    "(it takes the objects themselves) and gpunn.load_checkpoint to restore them")


def _what_to_save_instead(obj):
    """The call that saves `obj`, for torch.save habits (a whole model, an optimizer, swapped arguments)."""
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return "the dict comes first, as in torch.save: gpunn.save(model.state_dict(), path)"
    if hasattr(obj, "parameters") and hasattr(obj, "state_dict"):
        return (f"gpunn saves weights, not the {type(obj).__name__} itself: gpunn.save(model.state_dict(), path), "
                "or with its optimizer and progress, " + _CHECKPOINT_HINT)
    if hasattr(obj, "param_groups"):
        return _CHECKPOINT_HINT
    return "build one from name -> tensor, e.g. gpunn.save(model.state_dict(), path)"


def load(path, device=None, *, map_location=None, weights_only=True):
    """Read a safetensors file into a dict of name -> Tensor on `device` (default cpu), dtypes kept,
    or, for a file `save` wrote from a nested structure, that structure again.

    `map_location` is PyTorch's name for `device` (a device or its spec; a torch.device works
    too). `weights_only` is accepted for PyTorch code: gpunn only ever reads tensors and never
    unpickles, so True (or None) is what it always does and False is refused.
    """
    if weights_only is False:
        raise ValueError("load: weights_only=False asks to unpickle arbitrary objects, which gpunn never does: "
                         "its files hold tensors only. Drop weights_only=False (for a training state, "
                         "use gpunn.load_checkpoint)")
    if map_location is not None:
        if isinstance(map_location, dict) or callable(map_location):
            raise TypeError(f"load: map_location as a {type(map_location).__name__} is not supported; pass the "
                            "device to load onto, e.g. map_location='cpu' or device='cuda:0'")
        if type(map_location).__name__ == "device" and not isinstance(map_location, str):  # a torch.device
            map_location = str(map_location)
        if device is not None and as_device(device) != as_device(map_location):
            raise ValueError(f"load: device={device!r} and map_location={map_location!r} disagree; "
                             "pass one of them")
        device = map_location
    dev = as_device("cpu" if device is None else device)
    arrays, header = safetensors_format.load_file_with_metadata(path)
    if header.get(_OBJECT_FORMAT_KEY) == _OBJECT_FORMAT and _OBJECT_KEY in header:
        return _decode(_json(header[_OBJECT_KEY], path, "structure"), arrays, dev, path)
    return {name: Tensor._wrap(dev.put(array), dev) for name, array in arrays.items()}


def save_checkpoint(path, model=None, optimizer=None, scheduler=None, **meta):
    """Save the model, optimizer, scheduler, gpunn's random generator and `meta` to one file.

    `meta` holds JSON values (numbers, strings, lists, dicts, e.g. `epoch=3, step=1200,
    loader=loader.state_dict()`); `load_checkpoint` returns it.
    """
    from gpunn import __version__

    tensors = {}
    header = {"format": _FORMAT, "gpunn_version": __version__, "rng": json.dumps(get_rng_state())}
    for part, owner in zip(_PARTS, (model, optimizer, scheduler)):
        if owner is not None:
            header[part] = json.dumps(_encode(owner.state_dict(), part, tensors))
    header["meta"] = json.dumps({key: _encode(value, key, None) for key, value in meta.items()})
    safetensors_format.save_file(tensors, path, header)


def _snapshot(state):
    """A copy of a (nested) state_dict whose tensors have storage of their own."""
    if isinstance(state, Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_snapshot(v) for v in state)
    return state


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, device=None):
    """Restore what `save_checkpoint` saved into the objects given, and return its `meta` dict.

    Also restores gpunn's random generator. Tensors go to `device` when given, else to the device
    of the model's (or the optimizer's) parameters. Everything is decoded before any object is
    changed, and if loading one part fails the parts already loaded are put back, so a checkpoint
    that does not fit raises and changes nothing.
    """
    arrays, header = safetensors_format.load_file_with_metadata(path)
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a gpunn checkpoint (no '{_FORMAT}' marker); "
                         "a plain tensor file written by gpunn.save is read with gpunn.load")
    dev = as_device(device) if device is not None else _device_of(model, optimizer)
    states = {}
    for part, owner in zip(_PARTS, (model, optimizer, scheduler)):
        if owner is None:
            continue
        if part not in header:
            raise ValueError(f"{path}: the checkpoint holds no {part} state; pass {part}=None to skip it")
        states[part] = _decode(_json(header[part], path, part), arrays, dev, path)
    for key in ("rng", "meta"):
        if key not in header:
            raise ValueError(f"{path}: the checkpoint lacks its '{key}' entry; it is damaged or was not written by gpunn")
    rng = _json(header["rng"], path, "rng")
    meta = _decode(_json(header["meta"], path, "meta"), {}, dev, path)
    loaded = []  # (owner, its state before loading): put back if a later part fails
    try:
        for part, owner in zip(_PARTS, (model, optimizer, scheduler)):
            if owner is not None:
                before = _snapshot(owner.state_dict())  # a state_dict shares storage: loading writes into it
                owner.load_state_dict(states[part])
                loaded.append((owner, before))
    except Exception:
        for owner, before in reversed(loaded):
            owner.load_state_dict(before)
        raise
    set_rng_state(rng)
    return meta


# --- encoding: nested state -> JSON skeleton + named tensors -------------------------------------
#
# Lists, str-keyed dicts, str, int (any size), float (incl. nan/inf), bool and None are JSON as
# they are. The rest becomes a one-key dict tagged with a reserved "__name__" key:
#   {"__tensor__": name}  a Tensor, stored as the tensor `name`   ("__ndarray__", "__array__":
#                         a NumPy array / a raw backend array, given back as the same kind)
#   {"__tuple__": [...]}  a tuple                  {"__scalar__": [dtype, value]}  a NumPy scalar
#   {"__items__": [[key, value], ...]}  a dict with non-str keys (optimizer state is keyed by int)
#                         or keys starting with "__" (so tags never clash with user keys)


def _encode(value, name, tensors, who="save_checkpoint"):
    """The JSON skeleton of `value`; its arrays go into `tensors` under `name`-derived keys
    (`tensors=None` means arrays are not allowed, as in `meta`)."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":  # first: np.float64 is a float
        return {"__scalar__": [value.dtype.name, value.item()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _is_array(value):
        if tensors is None:
            raise TypeError(f"{who}: meta value {name!r} is a {type(value).__name__}; meta holds "
                            "JSON values: convert it with .item() or .tolist()")
        if name in tensors:
            raise ValueError(f"{who}: two entries would both be stored as {name!r}; rename one")
        tensors[name] = _to_host(value)
        tag = "__tensor__" if isinstance(value, Tensor) else "__ndarray__" if isinstance(value, np.ndarray) else "__array__"
        return {tag: name}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, _join(name, i), tensors, who) for i, v in enumerate(value)]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, _join(name, k), tensors, who) for k, v in value.items()}
        for k in value:
            if k is not None and not isinstance(k, (bool, int, float, str)):
                raise TypeError(f"{who}: {name!r} has a key of type {type(k).__name__}; "
                                "keys must be str, int, float, bool or None")
        return {"__items__": [[k, _encode(v, _join(name, k), tensors, who)] for k, v in value.items()]}
    what = "meta value" if tensors is None else "entry"
    raise TypeError(f"{who}: {what} {name or 'the object'!r} is a {type(value).__name__}, which cannot be saved; "
                    f"use tensors, numbers, strings, bools, None, lists, tuples and dicts{_hint_for(value)}")


def _join(name, key):
    return f"{name}.{key}" if name != "" else str(key)


def _hint_for(value):
    """For a module or optimizer inside a saved structure: save its state_dict() instead."""
    return f" (save {type(value).__name__}.state_dict(), not the object)" if hasattr(value, "state_dict") else ""


# Decoding treats the JSON as hostile: every tag's body is type-checked, NumPy scalars are limited to
# numeric dtypes (a dtype such as 'V1000000000000' would allocate on construction), the nesting depth
# is bounded, and a tensor referenced many times is decoded once, so nothing built is larger than a
# bounded multiple of the file. Nothing is ever evaluated or imported.
_MAX_DEPTH = 200
_SCALAR_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                            "float16", "float32", "float64"})
_ARRAY_TAGS = ("__tensor__", "__ndarray__", "__array__")


def _decode(skeleton, arrays, dev, path, depth=0, decoded=None):
    decoded = {} if decoded is None else decoded  # (tag, name) -> the object made for it

    def bad(why):
        return ValueError(f"{path}: the saved structure is damaged ({why}); the file was not written by gpunn "
                          "or was altered")

    if depth > _MAX_DEPTH:
        raise bad(f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(skeleton, list):
        return [_decode(v, arrays, dev, path, depth + 1, decoded) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if len(skeleton) == 1:
        (tag, body), = skeleton.items()
        if tag in _ARRAY_TAGS:
            if not isinstance(body, str) or body not in arrays:
                raise ValueError(f"{path}: the checkpoint refers to a tensor {body!r:.80} it does not hold; "
                                 "the file is damaged")
            if (tag, body) not in decoded:
                if tag == "__ndarray__":
                    decoded[tag, body] = arrays[body]
                else:
                    array = dev.put(arrays[body])
                    decoded[tag, body] = Tensor._wrap(array, dev) if tag == "__tensor__" else array
            return decoded[tag, body]
        if tag == "__tuple__":
            if not isinstance(body, list):
                raise bad("a tuple that is not a list")
            return tuple(_decode(v, arrays, dev, path, depth + 1, decoded) for v in body)
        if tag == "__scalar__":
            if not (isinstance(body, list) and len(body) == 2 and body[0] in _SCALAR_DTYPES
                    and isinstance(body[1], (bool, int, float))):
                raise bad(f"a NumPy scalar given as {body!r:.80}")
            try:
                return np.dtype(body[0]).type(body[1])
            except (OverflowError, ValueError, TypeError):
                raise bad(f"a NumPy scalar given as {body!r:.80}") from None
        if tag == "__items__":
            if not (isinstance(body, list) and all(isinstance(kv, list) and len(kv) == 2 and not
                                                   isinstance(kv[0], (list, dict)) for kv in body)):
                raise bad("a dict's items are not [key, value] pairs")
            return {k: _decode(v, arrays, dev, path, depth + 1, decoded) for k, v in body}
    return {k: _decode(v, arrays, dev, path, depth + 1, decoded) for k, v in skeleton.items()}


def _json(text, path, part):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # (too deep a nesting: json's own limit)
        raise ValueError(f"{path}: the checkpoint's {part} entry is not valid JSON ({exc}); the file is damaged") from None


# --- helpers ---------------------------------------------------------------------------------------


def _is_array(value):
    return isinstance(value, Tensor) or backends.owner(value) is not None and hasattr(value, "shape")


def _to_host(value):
    """A NumPy array of `value`'s values (no copy for host data: the writer only reads it)."""
    if isinstance(value, Tensor):
        value = value._array
    kind = backends.owner(value)
    return np.asarray(value) if kind == "cpu" else backends.get(kind).to_host(value)


def _device_of(model, optimizer):
    """Where the training state lives: the device of the first parameter found, else cpu."""
    params = []
    if model is not None and hasattr(model, "parameters"):
        params = list(model.parameters())
    if not params and optimizer is not None:
        params = [p for group in getattr(optimizer, "param_groups", []) for p in group.get("params", [])]
    first = next((p for p in params if isinstance(p, Tensor)), None)
    return first.device if first is not None else as_device("cpu")

