"""
A model's saved attributes as plain JSON (never pickle): classes by name (resolved only among imported modules),
spaces and schedules by their numbers, arrays as lists, non-finite floats as strings. What cannot be stored so
becomes an ``unsaved`` marker.
"""

from __future__ import annotations

import contextvars
import importlib
import math
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

from sb3_twm.common.checkpoints.errors import CheckpointError

# The largest array an attribute may decode to (bounds of a Box; an image's are stored as one fill value).
MAX_ARRAY_ELEMENTS = 2**24
# Which classes the value being decoded may name (decode_value's argument, seen by the nested decoders).
_ALLOWED_CLASS: contextvars.ContextVar[Callable[[type], bool] | None] = contextvars.ContextVar("allowed", default=None)
# The tag of a JSON object that encodes a non-JSON value in the model's ``data``.
TAG = "__twm__"
# Schedules stored by their numbers (fully qualified class name -> attributes); anything else callable is code.
SCHEDULE_CLASSES = {
    "stable_baselines3.common.utils.FloatSchedule": ("value_schedule",),
    "stable_baselines3.common.utils.ConstantSchedule": ("val",),
    "stable_baselines3.common.utils.LinearSchedule": ("start", "end", "end_fraction"),
    "rl_zoo3.utils.SimpleLinearSchedule": ("initial_value",),
}


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def encode_value(value: Any) -> Any:
    """
    Encode an attribute as plain JSON.

    :param value: The attribute.
    :return: JSON-able data; what cannot be stored without pickle becomes an ``unsaved`` marker.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no inf/nan (the dataset's metadata is written with allow_nan=False).
        return {TAG: "float", "value": _encode_float(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode_value(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {TAG: "tuple", "items": [encode_value(item) for item in value]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        if TAG in value:
            return _unsaved(value)
        return {key: encode_value(item) for key, item in value.items()}
    if isinstance(value, TrainFreq):
        return {TAG: "TrainFreq", "frequency": int(value.frequency), "unit": TrainFrequencyUnit(value.unit).value}
    if isinstance(value, deque):
        return {TAG: "deque", "maxlen": value.maxlen, "items": [encode_value(item) for item in value]}
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, spaces.Box):
        return {
            TAG: "Box",
            "shape": list(value.shape),
            "dtype": value.dtype.str,
            "low": _encode_array(value.low),
            "high": _encode_array(value.high),
        }
    if isinstance(value, spaces.Discrete):
        return {TAG: "Discrete", "n": int(value.n), "start": int(value.start)}
    if isinstance(value, type):
        return {TAG: "class", "module": value.__module__, "qualname": value.__qualname__}
    if _qualified_name(type(value)) in SCHEDULE_CLASSES:
        fields = SCHEDULE_CLASSES[_qualified_name(type(value))]
        return {TAG: "schedule", "class": _qualified_name(type(value)), **{f: encode_value(getattr(value, f)) for f in fields}}
    return _unsaved(value)


def _unsaved(value: Any) -> dict[str, Any]:
    text = repr(value)
    kind = type(value).__qualname__ if type(value).__module__ == "builtins" else _qualified_name(type(value))
    return {TAG: "unsaved", "type": kind, "repr": text if len(text) < 200 else text[:197] + "..."}


def is_unsaved(encoded: Any) -> bool:
    """:return: Whether ``encoded`` holds an ``unsaved`` marker anywhere."""
    if isinstance(encoded, dict):
        return encoded.get(TAG) == "unsaved" or any(is_unsaved(item) for item in encoded.values())
    if isinstance(encoded, list):
        return any(is_unsaved(item) for item in encoded)
    return False


def describe_unsaved(encoded: Any) -> str:
    """
    :param encoded: Encoded data for which :func:`is_unsaved` holds.
    :return: ``"a <type> (<repr>)"`` of its first ``unsaved`` marker, for messages.
    """
    if isinstance(encoded, dict) and encoded.get(TAG) == "unsaved":
        return f"a {encoded.get('type')} ({encoded.get('repr')})"
    items = encoded.values() if isinstance(encoded, dict) else encoded
    return next(describe_unsaved(item) for item in items if is_unsaved(item))


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    if array.dtype.hasobject:
        return _unsaved(array)
    encoded: dict[str, Any] = {TAG: "ndarray", "dtype": array.dtype.str, "shape": list(array.shape)}
    flat = array.reshape(-1)
    # Non-finite floats (e.g. a Box's infinite bounds) as the strings "inf", "-inf", "nan": strict JSON has no others.
    non_finite = array.dtype.kind == "f" and not np.all(np.isfinite(flat))
    if flat.size > 0 and (np.all(flat == flat[0]) or (non_finite and np.all(np.isnan(flat)))):
        # Images' bounds are uniform: one number instead of 16k.
        encoded["fill"] = _encode_float(flat[0].item()) if non_finite else flat[0].item()
    elif non_finite:
        encoded["data"] = [_encode_float(item) for item in flat.tolist()]
    else:
        encoded["data"] = flat.tolist()
    return encoded


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode_float(value: Any) -> Any:
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise CheckpointError(f"expected a number or one of {sorted(_NON_FINITE)}, got {value[:40]!r}")
        return _NON_FINITE[value]
    return value


def decode_value(encoded: Any, allowed_class: Callable[[type], bool] | None = None) -> Any:
    """
    Decode what :func:`encode_value` wrote. Nothing is imported or executed: a class must already be imported, and
    pass ``allowed_class`` before anything can call it.

    :param encoded: JSON data.
    :param allowed_class: Which classes the data may name (None: any already imported class).
    :return: The attribute. An ``unsaved`` marker raises ``CheckpointError`` (check :func:`is_unsaved` first); so does
        a class that is not allowed. Malformed values raise what decoding them raises (``TypeError``, ...).
    """
    token = _ALLOWED_CLASS.set(allowed_class)
    try:
        return _decode(encoded)
    finally:
        _ALLOWED_CLASS.reset(token)


def _decode(encoded: Any) -> Any:
    if isinstance(encoded, list):
        return [_decode(item) for item in encoded]
    if not isinstance(encoded, dict):
        return encoded
    kind = encoded.get(TAG)
    if kind is None:
        return {key: _decode(item) for key, item in encoded.items()}
    if kind not in _DECODERS:
        raise CheckpointError(f"unknown encoded value {str(kind)[:40]!r}")
    return _DECODERS[kind](encoded)


def _decode_class(encoded: dict[str, Any]) -> type:
    cls = resolve_class(str(encoded["module"]), str(encoded["qualname"]))
    allowed = _ALLOWED_CLASS.get()
    if allowed is not None and not allowed(cls):
        raise CheckpointError(f"the class {cls.__module__}.{cls.__qualname__} is not one a checkpoint may name")
    return cls


def _decode_deque(encoded: dict[str, Any]) -> deque:
    maxlen = encoded["maxlen"]
    if maxlen is not None and not (_is_int(maxlen) and maxlen >= 0):
        raise ValueError(f"maxlen={maxlen!r} is not a size")
    return deque((_decode(item) for item in encoded["items"]), maxlen=maxlen)


def _decode_box(encoded: dict[str, Any]) -> spaces.Box:
    shape = encoded["shape"]
    if not (isinstance(shape, list) and all(_is_int(size) and size >= 0 for size in shape)):
        raise ValueError(f"the shape {str(shape)[:80]} is not a list of sizes")
    dtype = _plain_dtype(encoded["dtype"])
    low, high = _decode_array(encoded["low"]), _decode_array(encoded["high"])
    return spaces.Box(low, high, tuple(shape), dtype)


def _decode_discrete(encoded: dict[str, Any]) -> spaces.Discrete:
    n, start = encoded["n"], encoded.get("start", 0)
    if not (_is_int(n) and n > 0 and _is_int(start)):
        raise ValueError(f"Discrete(n={n!r}, start={start!r}) is not a space (n must be a positive integer)")
    return spaces.Discrete(n, start=start)


def _decode_train_freq(encoded: dict[str, Any]) -> TrainFreq:
    frequency = encoded["frequency"]
    if not (_is_int(frequency) and frequency > 0):
        raise ValueError(f"the frequency {frequency!r} is not a positive integer")
    return TrainFreq(frequency, TrainFrequencyUnit(encoded["unit"]))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_schedule(encoded: dict[str, Any]) -> Any:
    name = encoded["class"]
    if name not in SCHEDULE_CLASSES:
        raise CheckpointError(f"unknown schedule class {name!r}")
    module, _, qualname = name.rpartition(".")
    cls = resolve_class(module, qualname, allow_import=True)  # the name is one of TWM's list, not the file's
    schedule = cls.__new__(cls)
    for field in SCHEDULE_CLASSES[name]:
        value = _decode(encoded[field])
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number or _qualified_name(type(value)) in SCHEDULE_CLASSES):
            raise ValueError(f"the schedule's {field} is {str(value)[:40]!r}, not a finite number or a schedule")
        setattr(schedule, field, value)
    return schedule


def _refuse_unsaved(encoded: dict[str, Any]) -> Any:
    raise CheckpointError(f"the value was {describe_unsaved(encoded)}, which a checkpoint does not store")


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tuple": lambda encoded: tuple(_decode(item) for item in encoded["items"]),
    "float": lambda encoded: float(_decode_float(encoded["value"])),
    "TrainFreq": _decode_train_freq,
    "deque": _decode_deque,
    "ndarray": lambda encoded: _decode_array(encoded),
    "Box": _decode_box,
    "Discrete": _decode_discrete,
    "class": _decode_class,
    "schedule": _decode_schedule,
    "unsaved": _refuse_unsaved,
}


def _plain_dtype(text: str) -> np.dtype:
    dtype = np.dtype(str(text))
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise CheckpointError(f"dtype {str(text)[:40]!r} is not a plain numeric dtype (bool, integer or float)")
    return dtype


def _decode_array(encoded: dict[str, Any]) -> np.ndarray:
    if not (isinstance(encoded, dict) and encoded.get(TAG) == "ndarray"):
        raise CheckpointError(f"expected an encoded array, got {str(encoded)[:40]!r}")
    dtype = _plain_dtype(encoded["dtype"])
    shape = encoded["shape"]
    if not (isinstance(shape, list) and all(_is_int(size) and size >= 0 for size in shape)):
        raise ValueError(f"the shape {str(shape)[:80]} is not a list of sizes")
    if math.prod(shape) > MAX_ARRAY_ELEMENTS:
        raise ValueError(f"an array of shape {tuple(shape)} is larger than a checkpoint's attributes can be")
    if "fill" in encoded:
        fill = _decode_float(encoded["fill"])
        if (isinstance(fill, bool) and dtype.kind != "b") or not isinstance(fill, (int, float)):
            raise ValueError(f"the fill value {str(fill)[:40]!r} is not a number")
        return np.full(tuple(shape), fill, dtype=dtype)
    data = encoded["data"]
    if not (isinstance(data, list) and len(data) == math.prod(shape)):
        raise ValueError(f"the data is not a list of {math.prod(shape)} numbers")
    if dtype.kind == "f":
        data = [_decode_float(item) for item in data]
    return np.asarray(data, dtype=dtype).reshape(tuple(shape))


def resolve_class(module: str, qualname: str, allow_import: bool = False) -> type:
    """
    :param module: Module name.
    :param qualname: Qualified name in it.
    :param allow_import: Import the module when needed; only for names from a fixed list in this code.
    :return: The class, from a module that is already imported (a checkpoint itself never triggers an import).
    """
    if allow_import and module not in sys.modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CheckpointError(f"class {module}.{qualname} cannot be imported ({error})") from None
    if module not in sys.modules:
        raise CheckpointError(
            f"class {module}.{qualname} is in module {module!r}, which is not imported: import it before loading "
            "(checkpoints never import or unpickle code), or pass the class in custom_objects"
        )
    value: Any = sys.modules[module]
    for part in qualname.split("."):
        if part.startswith("<"):
            raise CheckpointError(f"class {module}.{qualname} is local to a function: pass it in custom_objects")
        value = getattr(value, part, None)
    if not isinstance(value, type):
        raise CheckpointError(f"{module}.{qualname} is not a class")
    return value
