"""Backend-independent dtype names: `x.dtype == gpunn.float32` holds on every device."""


class dtype:
    __slots__ = ("name", "is_floating_point", "itemsize")

    def __init__(self, name, is_floating_point, itemsize):
        self.name, self.is_floating_point, self.itemsize = name, is_floating_point, itemsize

    def __repr__(self):
        return f"gpunn.{self.name}"

    __str__ = __repr__

    def __eq__(self, other):
        if isinstance(other, dtype):
            return other.name == self.name
        try:
            return as_dtype(other).name == self.name
        except (TypeError, ValueError):
            return NotImplemented

    def __hash__(self):
        return hash(self.name)

    def __reduce__(self):  # copy/deepcopy keep the singleton
        return (as_dtype, (self.name,))


float16 = dtype("float16", True, 2)
bfloat16 = dtype("bfloat16", True, 2)  # a name for autocast and safetensors: NumPy and CuPy have no such array type
float32 = dtype("float32", True, 4)
float64 = dtype("float64", True, 8)
int8 = dtype("int8", False, 1)
int16 = dtype("int16", False, 2)
int32 = dtype("int32", False, 4)
int64 = dtype("int64", False, 8)
uint8 = dtype("uint8", False, 1)
bool_ = dtype("bool", False, 1)

_BY_NAME = {d.name: d for d in (float16, bfloat16, float32, float64, int8, int16, int32, int64, uint8, bool_)}
_ALIASES = {"float": float32, "double": float64, "half": float16, "long": int64, "int": int64}


_seen = {}  # (type, backend dtype) -> gpunn dtype: Tensor.dtype is asked often


def as_dtype(value):
    """A gpunn dtype from a gpunn dtype, a name ("float32"), a NumPy dtype or a backend dtype."""
    if isinstance(value, dtype):
        return value
    try:
        return _seen[(type(value), value)]
    except (KeyError, TypeError):
        pass
    found = _parse(value)
    try:
        _seen[(type(value), value)] = found
    except TypeError:  # unhashable
        pass
    return found


def _parse(value):
    if isinstance(value, str):
        key = value.removeprefix("gpunn.").removeprefix("torch.")
        found = _BY_NAME.get(key) or _ALIASES.get(key)
        if found is None:
            raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(_BY_NAME)}")
        return found
    if value is float:
        return float32
    if value is int:
        return int64
    if value is bool:
        return bool_
    name = getattr(value, "name", None) or str(value)  # numpy dtypes and scalar types, strict dtypes
    if not isinstance(name, str) or name.split(".")[-1] not in _BY_NAME:
        try:
            import numpy as np

            name = np.dtype(value).name
        except TypeError:
            raise TypeError(f"cannot interpret {value!r} as a dtype; use a name like 'float32'") from None
    return as_dtype(name.split(".")[-1])
