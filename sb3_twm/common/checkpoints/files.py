"""
Checkpoint files: atomic writes, the model zip's JSON member, the dataset ``.npz`` (written and read without pickle),
and the names SB3's ``CheckpointCallback`` and rl-zoo3 give a checkpoint's companion files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from sb3_twm.common.checkpoints.errors import CheckpointError

DATASET_FORMAT = "sb3-twm-dataset"
DATASET_FORMAT_VERSION = 1
_COPY_CHUNK_BYTES = 16 * 2**20
_MAX_METADATA_BYTES = 2**24
# Objects and arrays a JSON member may hold: a checkpoint's attributes have a few hundred, plus one per episode of the
# statistics window (stats_window_size, 100 by default).
MAX_JSON_CONTAINERS = 100_000


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _naming(error, path) from error
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, CheckpointError):
            raise _naming(error, path) from error
        raise
    _fsync_directory(path.parent)


def _naming(error: OSError, path: pathlib.Path) -> OSError:
    # The same error (errno, type), with the file it was writing: "No space left on device" alone names nothing.
    return type(error)(error.errno, f"{error.strerror or error} (while writing {path}; nothing was changed there)")


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


@contextlib.contextmanager
def open_for_reading(path: str | pathlib.Path | IO[bytes]) -> Iterator[IO[bytes]]:
    """
    Open a file to load, once: everything read from it comes through this one file object, so a file replaced while
    it loads is never read. Only regular files are opened (a device such as ``/dev/zero`` or a pipe would be read
    forever or block), without blocking on the open itself.

    :param path: A path, or a binary file object (yielded as it is).
    :return: Context manager yielding the binary file.
    """
    if not isinstance(path, (str, pathlib.Path)):
        yield path
        return
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CheckpointError(f"{path} cannot be opened ({error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CheckpointError(
                f"{path} is not a regular file (a device, pipe or socket): checkpoints are read from regular files only"
            )
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        yield file


def parse_json(text: bytes, name: str, what: str) -> Any:
    """
    :param text: UTF-8 JSON.
    :param name: The file, for messages.
    :param what: What the JSON is, for messages.
    :return: The parsed value; anything that is not valid, reasonably nested JSON, or that holds more objects and
        arrays than a checkpoint has, raises ``CheckpointError``.
    """
    # Each JSON object or array becomes a Python dict or list of 50-200 bytes: a few megabytes of "{}," would take
    # gigabytes. Counting brackets (those inside strings too) bounds that before anything is parsed.
    containers = text.count(b"{") + text.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise CheckpointError(
            f"{name}: {what} holds {containers} JSON objects and arrays, more than the {MAX_JSON_CONTAINERS} a checkpoint "
            "has (corrupted or not TWM's)"
        )
    try:
        return json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError includes JSONDecodeError and integers with more digits than Python parses.
        message = "nested too deeply" if isinstance(error, RecursionError) else f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{name}: {what} is not valid JSON ({str(message)[:200]})") from None


class ZipReader:
    """
    The members of a checkpoint zip, each read at most as large as the caller allows: the size a member declares is
    checked before anything is decompressed (a few MB of zip can inflate to GBs), duplicate names are refused
    (which copy would be read is undefined), and each member's CRC is checked as it is read.

    :param file: The open zip file.
    :param name: The file, for messages.
    :param what: What the file should be, for messages.
    """

    MAX_MEMBERS = 256

    def __init__(self, file: IO[bytes], name: str, what: str = "model checkpoint") -> None:
        self.name = name
        try:
            self.archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as error:
            raise CheckpointError(f"{name} is not a complete zip file (truncated or not a {what}): {error}") from None
        names = self.archive.namelist()
        if len(names) > self.MAX_MEMBERS:
            raise CheckpointError(f"{name} has {len(names)} members, more than a {what} has")
        duplicates = sorted({member for member in names if names.count(member) > 1})
        if duplicates:
            raise CheckpointError(f"{name} holds members more than once: {duplicates}")
        self.members = {info.filename: info for info in self.archive.infolist()}

    def __contains__(self, member: str) -> bool:
        return member in self.members

    def read(self, member: str, max_bytes: int) -> bytes:
        """
        :param member: Member name.
        :param max_bytes: The most it may hold (uncompressed).
        :return: Its bytes.
        """
        info = self.members.get(member)
        if info is None:
            raise CheckpointError(f"{self.name} has no {member!r} member (not a TWM checkpoint, or an incomplete one)")
        if info.file_size > max_bytes:
            raise CheckpointError(
                f"{self.name}: member {member!r} declares {info.file_size} bytes, more than the {max_bytes} it can "
                "hold: refused before reading it"
            )
        try:
            with self.archive.open(info) as file:
                # zipfile stops at the declared size and checks the CRC once it has read the member whole.
                content = file.read(max_bytes + 1)
        except zipfile.BadZipFile as error:
            if "CRC" in str(error):
                raise CheckpointError(f"{self.name} is corrupted: member {member!r} fails its CRC check") from None
            raise CheckpointError(f"{self.name}: member {member!r} is corrupted ({error})") from None
        except (EOFError, NotImplementedError, ValueError, OSError, RuntimeError) as error:
            raise CheckpointError(f"{self.name}: member {member!r} cannot be read ({type(error).__name__}: {error})") from None
        if len(content) > max_bytes:
            raise CheckpointError(f"{self.name}: member {member!r} holds more than {max_bytes} bytes")
        return content

    def read_json(self, member: str, max_bytes: int) -> Any:
        """:return: A member's JSON content (see :meth:`read` and :func:`parse_json`)."""
        return parse_json(self.read(member, max_bytes), self.name, f"member {member!r}")


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


def _starts_like_a_pickle(file: IO[bytes]) -> bool:
    # Pickle protocols 2 and later start with the PROTO opcode; only the first byte is looked at, nothing is parsed.
    try:
        file.seek(0)
        return file.read(1) == b"\x80"
    except (OSError, ValueError, AttributeError):
        return False


class NpzReader:
    """
    Reads a ``.npz`` written by :func:`write_npz` member by member, straight into preallocated arrays, checking each
    member's header (dtype, shape, no pickled objects) and its CRC. Errors name the file.

    :param file: The open file.
    :param name: The file's name, for messages.
    """

    def __init__(self, file: IO[bytes], name: str) -> None:
        self.name = name
        try:
            self.archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            if _starts_like_a_pickle(file):
                raise CheckpointError(
                    f"{self.name} is a pickle file, not a TWM dataset (.npz); TWM never unpickles files. "
                    "It was probably saved by an older sb3-twm or another algorithm."
                ) from None
            raise CheckpointError(
                f"{self.name} is not a TWM dataset: not a complete .npz/zip file (truncated, or another format)"
            ) from None
        names = self.archive.namelist()
        duplicates = sorted({member for member in names if names.count(member) > 1})
        if duplicates:
            raise CheckpointError(f"{self.name} holds members more than once: {duplicates}")
        self.members = set(names)

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
        metadata = parse_json(raw.tobytes(), self.name, "the metadata")
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
    with open_for_reading(path) as file, NpzReader(file, display_name(path)) as reader:
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
