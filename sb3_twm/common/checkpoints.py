"""
Checkpoint support of TWM: atomic file writes, random-generator states as plain data, the model's saved attributes
as plain JSON (never pickle) and the dataset as an ``.npz`` of plain arrays.

A TWM checkpoint is two files:

- the model zip, in SB3's layout (a JSON ``data`` entry and ``.pth`` state dicts, which SB3 loads with
  ``weights_only=True``). Every attribute in ``data`` is plain JSON: classes are stored by name and resolved only
  among modules that are already imported, spaces and schedules by their numbers, arrays as lists. Loading never
  unpickles anything from the file;
- the dataset ``.npz`` (one ``.npy`` member per array plus a ``metadata`` member holding UTF-8 JSON), written and
  read without pickle.

Both are written to a temporary file in the target's folder, flushed to disk and renamed over the target
(:func:`atomic_write`), so a process killed while saving leaves the previous file whole. A kill leaves the
temporary file behind (``.<name>.<random>.tmp`` next to the target); it is safe to delete.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import pathlib
import random
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

CHECKPOINT_FORMAT_VERSION = 1
DATASET_FORMAT = "sb3-twm-dataset"
DATASET_FORMAT_VERSION = 1
# The tag of a JSON object that encodes a non-JSON value in the model's ``data``.
TAG = "__twm__"
# Run-time state only: when the file cannot give one (e.g. SB3 pickled it), it starts fresh (None) instead.
DROPPABLE_ATTRIBUTES = frozenset(
    {"_last_obs", "_last_original_obs", "_last_episode_starts", "lr_schedule", "ep_info_buffer", "ep_success_buffer"}
)
# Schedules stored by their numbers (fully qualified class name -> attributes); anything else callable is code.
SCHEDULE_CLASSES = {
    "stable_baselines3.common.utils.FloatSchedule": ("value_schedule",),
    "stable_baselines3.common.utils.ConstantSchedule": ("val",),
    "stable_baselines3.common.utils.LinearSchedule": ("start", "end", "end_fraction"),
    "rl_zoo3.utils.SimpleLinearSchedule": ("initial_value",),
}
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_COPY_CHUNK_BYTES = 16 * 2**20
_MAX_METADATA_BYTES = 2**24


class CheckpointError(ValueError):
    """A checkpoint or dataset file that cannot be loaded: truncated, corrupted, foreign or not matching the model."""


# ----------------------------------------------------------------------------------------------------- atomic files
def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _current_umask()


def display_name(path: str | pathlib.Path | IO[bytes]) -> str:
    """:return: The path, or a file object's name, for messages."""
    return str(path) if isinstance(path, (str, pathlib.Path)) else str(getattr(path, "name", "<file object>"))


@contextlib.contextmanager
def open_for_writing(path: str | pathlib.Path | IO[bytes], suffix: str) -> Iterator[IO[bytes]]:
    """
    :param path: A path (``.suffix`` appended when it has none, SB3's rule), written with :func:`atomic_write`, or a
        binary file object, written in place.
    :param suffix: Suffix without the dot.
    :return: Context manager yielding the binary file to write.
    """
    if isinstance(path, (str, pathlib.Path)):
        with atomic_write(with_suffix(path, suffix)) as file:
            yield file
    else:
        yield path


def with_suffix(path: str | pathlib.Path, suffix: str) -> pathlib.Path:
    """
    :param path: A path as the user gave it.
    :param suffix: Suffix without the dot.
    :return: The path, with ``.suffix`` appended when it has none (SB3's rule for saving).
    """
    path = pathlib.Path(path)
    return path if path.suffix else pathlib.Path(f"{path}.{suffix}")


def existing_path(path: str | pathlib.Path | IO[bytes], suffix: str) -> pathlib.Path | IO[bytes]:
    """
    :param path: A path as the user gave it, or a binary file object (returned as it is).
    :param suffix: Suffix without the dot.
    :return: The path, or the path with ``.suffix`` appended when only that exists (SB3's rule for loading).
    """
    if not isinstance(path, (str, pathlib.Path)):
        return path
    path = pathlib.Path(path)
    candidate = pathlib.Path(f"{path}.{suffix}")
    if not path.exists() and not path.suffix and candidate.exists():
        return candidate
    return path


@contextlib.contextmanager
def atomic_write(path: str | pathlib.Path) -> Iterator[IO[bytes]]:
    """
    Write a file all or nothing: the content goes to a temporary file in the same folder, which is flushed to disk and
    renamed over ``path`` (``os.replace``) only once the ``with`` block has finished without error.

    :param path: The file to write (its folder is created when missing).
    :return: Context manager yielding a binary file open for writing (seekable, as zip archives need).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: pathlib.Path) -> None:
    # Makes the rename itself durable (POSIX); not possible on every platform, where it is skipped.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------------- random state
def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """:return: The state of a numpy ``Generator`` as JSON-able data."""
    return _to_json_ints(generator.bit_generator.state)


def make_generator(state: dict[str, Any]) -> np.random.Generator:
    """
    :param state: What :func:`generator_state` returned.
    :return: A numpy ``Generator`` in that state.
    """
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise CheckpointError(f"unknown numpy bit generator {name!r} (expected one of {_BIT_GENERATORS})")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _to_json_ints(value: Any) -> Any:
    # Bit-generator states hold Python ints (PCG64's are 128-bit) and sometimes numpy scalars or arrays.
    if isinstance(value, dict):
        return {key: _to_json_ints(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def capture_rng_state(action_space: spaces.Space | None = None) -> tuple[dict[str, Any], dict[str, th.Tensor]]:
    """
    Capture every process-wide random generator TWM draws from.

    :param action_space: A space whose generator (random actions of the prefill) is captured too.
    :return: JSON-able states (numpy's global generator, Python's ``random``, the action space's generator) and
        tensors (torch's CPU generator as a uint8 tensor; the CUDA generators stacked, empty while CUDA is unused).
    """
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "numpy": {"key": keys.tolist(), "pos": int(position), "has_gauss": int(has_gauss), "gauss": cached_gaussian},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if action_space is not None:
        state["action_space"] = generator_state(action_space.np_random)
    # Without CUDA initialised nothing has drawn from its generators, and reading them would initialise CUDA.
    cuda_used = th.cuda.is_available() and th.cuda.is_initialized()
    cuda = th.stack(th.cuda.get_rng_state_all()) if cuda_used else th.empty(0, dtype=th.uint8)
    return state, {"torch": th.get_rng_state(), "cuda": cuda}


def restore_rng_state(
    state: dict[str, Any], tensors: dict[str, th.Tensor], action_space: spaces.Space | None = None
) -> None:
    """
    Put the generators back in the state :func:`capture_rng_state` returned.

    :param state: The JSON-able part.
    :param tensors: The tensor part (``torch``, and ``cuda`` restored when the device count matches).
    :param action_space: The space to give the captured action-space generator.
    """
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np.asarray(numpy_state["key"], dtype=np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["gauss"]),
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
    th.set_rng_state(tensors["torch"].detach().to("cpu", th.uint8))
    cuda = tensors.get("cuda")
    if cuda is not None and cuda.numel() > 0 and th.cuda.is_available() and len(cuda) == th.cuda.device_count():
        th.cuda.set_rng_state_all([row.detach().to("cpu", th.uint8) for row in cuda])
    if action_space is not None and "action_space" in state:
        action_space._np_random = make_generator(state["action_space"])


def check_rng_state(state: Any, tensors: dict[str, Any]) -> None:
    """Raise ``CheckpointError`` unless ``state``/``tensors`` have the layout :func:`capture_rng_state` gives."""
    try:
        assert isinstance(state, dict)
        assert len(state["numpy"]["key"]) == 624 and 0 <= int(state["numpy"]["pos"]) <= 624
        assert len(state["python"]["internal"]) == 625
        torch_state = tensors["torch"]
        assert isinstance(torch_state, th.Tensor) and torch_state.dtype == th.uint8 and torch_state.numel() > 0
        if "action_space" in state:
            make_generator(state["action_space"])
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"the random-generator states are malformed ({type(error).__name__}: {error})") from None


def resume_seed(seed: int, num_timesteps: int) -> int:
    """
    :param seed: The run's seed.
    :param num_timesteps: The env step at which the envs restart.
    :return: The seed of the envs' restart at that step (a pure function: no generator is drawn from).
    """
    return int(np.random.SeedSequence([int(seed) % 2**32, int(num_timesteps)]).generate_state(1)[0] % 2**31)


# --------------------------------------------------------------------------------------- attributes as plain JSON
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


def decode_value(encoded: Any) -> Any:
    """
    Decode what :func:`encode_value` wrote. Nothing is imported or executed: a class must already be imported.

    :param encoded: JSON data.
    :return: The attribute. An ``unsaved`` marker raises ``CheckpointError`` (check :func:`is_unsaved` first).
    """
    if isinstance(encoded, list):
        return [decode_value(item) for item in encoded]
    if not isinstance(encoded, dict):
        return encoded
    kind = encoded.get(TAG)
    if kind is None:
        return {key: decode_value(item) for key, item in encoded.items()}
    if kind == "tuple":
        return tuple(decode_value(item) for item in encoded["items"])
    if kind == "float":
        return float(_decode_float(encoded["value"]))
    if kind == "TrainFreq":
        return TrainFreq(int(encoded["frequency"]), TrainFrequencyUnit(encoded["unit"]))
    if kind == "deque":
        maxlen = encoded["maxlen"]
        return deque((decode_value(item) for item in encoded["items"]), maxlen=None if maxlen is None else int(maxlen))
    if kind == "ndarray":
        return _decode_array(encoded)
    if kind == "Box":
        low, high = _decode_array(encoded["low"]), _decode_array(encoded["high"])
        return spaces.Box(low, high, tuple(int(size) for size in encoded["shape"]), _plain_dtype(encoded["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(int(encoded["n"]), start=int(encoded.get("start", 0)))
    if kind == "class":
        return resolve_class(str(encoded["module"]), str(encoded["qualname"]))
    if kind == "schedule":
        name = encoded["class"]
        if name not in SCHEDULE_CLASSES:
            raise CheckpointError(f"unknown schedule class {name!r}")
        module, _, qualname = name.rpartition(".")
        cls = resolve_class(module, qualname, allow_import=True)  # the name is one of TWM's list, not the file's
        schedule = cls.__new__(cls)
        for field in SCHEDULE_CLASSES[name]:
            setattr(schedule, field, decode_value(encoded[field]))
        return schedule
    if kind == "unsaved":
        raise CheckpointError(f"the value was {describe_unsaved(encoded)}, which a checkpoint does not store")
    raise CheckpointError(f"unknown encoded value {kind!r}")


def _plain_dtype(text: str) -> np.dtype:
    dtype = np.dtype(text)
    if dtype.hasobject or dtype.fields is not None:
        raise CheckpointError(f"dtype {text!r} is not a plain numeric dtype")
    return dtype


def _decode_array(encoded: dict[str, Any]) -> np.ndarray:
    if encoded.get(TAG) != "ndarray":
        raise CheckpointError("expected an encoded array")
    dtype = _plain_dtype(encoded["dtype"])
    shape = tuple(int(size) for size in encoded["shape"])
    if "fill" in encoded:
        return np.full(shape, _decode_float(encoded["fill"]), dtype=dtype)
    data = encoded["data"]
    if dtype.kind == "f" and isinstance(data, list):
        data = [_decode_float(item) for item in data]
    return np.asarray(data, dtype=dtype).reshape(shape)


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


# ---------------------------------------------------------------------------------------------- model zip reading
def read_zip_json(path: str | pathlib.Path | io.BufferedIOBase, member: str = "data") -> dict[str, Any]:
    """
    Check a model zip (every member's CRC) and read its JSON ``data`` without decoding anything.

    :param path: The zip file (or a seekable binary file object, left at the position it had).
    :param member: The JSON member.
    :return: The parsed JSON object.
    """
    name = display_name(path)
    start = None if isinstance(path, (str, pathlib.Path)) else path.tell()
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CheckpointError(f"{name} is corrupted: member {bad!r} fails its CRC check")
            if member not in archive.namelist():
                raise CheckpointError(f"{name} is not an SB3/TWM model zip: it has no {member!r} entry")
            text = archive.read(member).decode("utf-8")
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{name} is not a complete zip file (truncated or not a model checkpoint): {error}") from None
    except (EOFError, zipfile.LargeZipFile, UnicodeDecodeError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CheckpointError(f"{name} cannot be read as a model checkpoint ({type(error).__name__}: {error})") from None
    finally:
        if start is not None:
            path.seek(start)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{name}: the 'data' entry is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{name}: the 'data' entry is not a JSON object")
    return data


# ---------------------------------------------------------------------------------------------------- dataset .npz
def _json_bytes(metadata: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(metadata, allow_nan=False).encode("utf-8"), dtype=np.uint8)


def write_npz(file: IO[bytes], metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """
    Write an uncompressed ``.npz``: a ``metadata`` member (UTF-8 JSON as uint8) and the arrays, none pickled.

    :param file: Seekable binary file open for writing.
    :param metadata: JSON-able metadata.
    :param arrays: Name -> array (written in chunks, never copied whole).
    """
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in {"metadata": _json_bytes(metadata), **arrays}.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _starts_like_a_pickle(path: str | pathlib.Path | io.BufferedIOBase) -> bool:
    # Pickle protocols 2 and later start with the PROTO opcode; only the first byte is looked at, nothing is parsed.
    try:
        if isinstance(path, (str, pathlib.Path)):
            with open(path, "rb") as file:
                return file.read(1) == b"\x80"
        path.seek(0)
        return path.read(1) == b"\x80"
    except (OSError, ValueError, AttributeError):
        return False


class NpzReader:
    """
    Reads a ``.npz`` written by :func:`write_npz` member by member, straight into preallocated arrays, checking each
    member's header (dtype, shape, no pickled objects) and its CRC. Errors name the file.

    :param path: The file.
    """

    def __init__(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        self.name = display_name(path)
        try:
            self.archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            if _starts_like_a_pickle(path):
                raise CheckpointError(
                    f"{self.name} is a pickle file, not a TWM dataset (.npz); TWM never unpickles files. "
                    "It was probably saved by an older sb3-twm or another algorithm."
                ) from None
            raise CheckpointError(
                f"{self.name} is not a TWM dataset: not a complete .npz/zip file (truncated, or another format)"
            ) from None
        self.members = set(self.archive.namelist())

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *args: Any) -> None:
        self.archive.close()

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.name}: {message}")

    def _open(self, name: str) -> tuple[IO[bytes], tuple[int, ...], np.dtype]:
        member = f"{name}.npy"
        if member not in self.members:
            raise self.error(f"the array {name!r} is missing (not a TWM dataset, or an incomplete one)")
        try:
            file = self.archive.open(member)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as error:
            raise self.error(f"array {name!r} is corrupted ({error})") from None
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise self.error(f"array {name!r} has an unsupported .npy version {version}")
        except ValueError as error:
            file.close()
            if isinstance(error, CheckpointError):
                raise
            raise self.error(f"array {name!r} has a malformed .npy header ({error})") from None
        if dtype.hasobject or dtype.fields is not None:
            file.close()
            raise self.error(f"array {name!r} holds Python objects (pickled data), which TWM never loads")
        if fortran_order:
            file.close()
            raise self.error(f"array {name!r} is stored in Fortran order, which TWM datasets never are")
        return file, tuple(shape), dtype

    def read_metadata(self) -> dict[str, Any]:
        """:return: The JSON metadata."""
        file, shape, dtype = self._open("metadata")
        with file:
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > _MAX_METADATA_BYTES:
                raise self.error("the 'metadata' member is not UTF-8 JSON bytes of a sensible size")
            raw = np.empty(shape, np.uint8)
            self._copy(file, "metadata", raw)
        try:
            metadata = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self.error(f"the metadata is not valid JSON ({error})") from None
        if not isinstance(metadata, dict):
            raise self.error("the metadata is not a JSON object")
        return metadata

    def read_into(self, name: str, destination: np.ndarray) -> None:
        """
        Read a member into ``destination`` (C-contiguous; its shape and dtype are what the member must have).

        :param name: Member name without ``.npy``.
        :param destination: Preallocated array.
        """
        file, shape, dtype = self._open(name)
        with file:
            if shape != destination.shape or dtype != destination.dtype:
                raise self.error(
                    f"array {name!r} has shape {shape} and dtype {dtype}, expected {destination.shape} and "
                    f"{destination.dtype} (from the dataset's metadata and the model)"
                )
            self._copy(file, name, destination)

    def _copy(self, file: IO[bytes], name: str, destination: np.ndarray) -> None:
        # Chunked, never a whole extra copy; reading to the end makes zipfile check the member's CRC.
        view = memoryview(destination.reshape(-1).view(np.uint8))
        offset = 0
        try:
            while offset < len(view):
                count = file.readinto(view[offset : offset + _COPY_CHUNK_BYTES])
                if not count:
                    raise self.error(f"array {name!r} is truncated ({offset} of {len(view)} bytes)")
                offset += count
            if file.read(1):
                raise self.error(f"array {name!r} has more data than its header declares")
        except zipfile.BadZipFile as error:
            raise self.error(f"array {name!r} is corrupted ({error})") from None


def read_npz_into(
    path: str | pathlib.Path | io.BufferedIOBase, allocate: Callable[[dict[str, Any]], dict[str, np.ndarray]]
) -> dict[str, Any]:
    """
    Read a dataset: its metadata, then every array into the arrays ``allocate(metadata)`` returns.

    :param path: The file.
    :param allocate: Validates the metadata (raising ``CheckpointError``) and returns name -> destination array.
    :return: The metadata.
    """
    with NpzReader(path) as reader:
        metadata = reader.read_metadata()
        if metadata.get("format") != DATASET_FORMAT:
            raise reader.error(f"not a TWM dataset (format {metadata.get('format')!r}, expected {DATASET_FORMAT!r})")
        if metadata.get("version") != DATASET_FORMAT_VERSION:
            raise reader.error(
                f"dataset format version {metadata.get('version')!r} is not supported (this sb3-twm reads version "
                f"{DATASET_FORMAT_VERSION})"
            )
        try:
            destinations = allocate(metadata)
        except CheckpointError as error:
            raise reader.error(str(error)) from None
        except (KeyError, TypeError, ValueError) as error:
            raise reader.error(f"the metadata is malformed ({type(error).__name__}: {error})") from None
        for name, destination in destinations.items():
            reader.read_into(name, destination)
    return metadata


def _checkpoint_name(model_path: pathlib.Path) -> tuple[str, str] | None:
    # ``<prefix>_<N>_steps.zip`` (SB3's CheckpointCallback) -> (prefix, N); any other name -> None.
    stem = model_path.name[: -len(".zip")] if model_path.name.endswith(".zip") else model_path.name
    prefix, _, rest = stem.rpartition("_")
    if rest != "steps":
        return None
    prefix, _, steps = prefix.rpartition("_")
    return (prefix, steps) if prefix and steps.isdigit() else None


def dataset_path_for_checkpoint(model_path: str | pathlib.Path) -> pathlib.Path | None:
    """
    The dataset that belongs to a model checkpoint, by the names SB3 and rl-zoo3 give them.

    ``<dir>/<prefix>_<N>_steps.zip`` (``CheckpointCallback``) -> ``<dir>/<prefix>_replay_buffer_<N>_steps.pkl``;
    any other model -> ``<dir>/replay_buffer.pkl`` (rl-zoo3's ``--save-replay-buffer``), when the file exists.

    :param model_path: The model zip.
    :return: The dataset path, or None when there is none.
    """
    model_path = pathlib.Path(model_path)
    name = _checkpoint_name(model_path)
    if name is not None:
        candidate = model_path.parent / f"{name[0]}_replay_buffer_{name[1]}_steps.pkl"
    else:
        candidate = model_path.parent / "replay_buffer.pkl"
    return candidate if candidate.is_file() else None


def vecnormalize_path_for_checkpoint(model_path: str | pathlib.Path) -> pathlib.Path | None:
    """
    The ``VecNormalize`` statistics saved with a model checkpoint: ``<dir>/<prefix>_vecnormalize_<N>_steps.pkl`` for
    ``<dir>/<prefix>_<N>_steps.zip`` (``CheckpointCallback(save_vecnormalize=True)``), when the file exists.

    :param model_path: The model zip.
    :return: The statistics' path, or None (not a checkpoint, or saved without them).
    """
    model_path = pathlib.Path(model_path)
    name = _checkpoint_name(model_path)
    if name is None:
        return None
    candidate = model_path.parent / f"{name[0]}_vecnormalize_{name[1]}_steps.pkl"
    return candidate if candidate.is_file() else None
