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

Modules: ``files`` (atomic writes, the zip's JSON, the dataset ``.npz``, companion file names), ``values`` (attributes
as plain JSON), ``random_state`` (random generators as data), ``errors``.
"""

from sb3_twm.common.checkpoints.errors import CheckpointError
from sb3_twm.common.checkpoints.files import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    NpzReader,
    atomic_write,
    dataset_path_for_checkpoint,
    display_name,
    existing_path,
    open_for_reading,
    open_for_writing,
    parse_json,
    read_npz_into,
    vecnormalize_path_for_checkpoint,
    with_suffix,
    write_npz,
)
from sb3_twm.common.checkpoints.random_state import (
    capture_rng_state,
    check_rng_state,
    generator_state,
    make_generator,
    restore_rng_state,
    resume_seed,
)
from sb3_twm.common.checkpoints.values import (
    SCHEDULE_CLASSES,
    TAG,
    decode_value,
    describe_unsaved,
    encode_value,
    is_unsaved,
    resolve_class,
)

__all__ = [
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "SCHEDULE_CLASSES",
    "TAG",
    "CheckpointError",
    "NpzReader",
    "atomic_write",
    "capture_rng_state",
    "check_rng_state",
    "dataset_path_for_checkpoint",
    "decode_value",
    "describe_unsaved",
    "display_name",
    "encode_value",
    "existing_path",
    "generator_state",
    "is_unsaved",
    "make_generator",
    "open_for_reading",
    "open_for_writing",
    "parse_json",
    "read_npz_into",
    "resolve_class",
    "restore_rng_state",
    "resume_seed",
    "vecnormalize_path_for_checkpoint",
    "with_suffix",
    "write_npz",
]
