"""
Files from someone else: a crafted model zip, dataset or policy file never runs code, never crashes or exhausts the
process, and is refused with a ``CheckpointError`` that names the file and what is wrong (one test per case).
"""

import builtins
import errno
import io
import json
import os
import pathlib
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from configurations import TINY_MLP_POLICY_KWARGS, TINY_SCHEDULE_KWARGS

from sb3_twm import TWM, TWMPolicy
from sb3_twm.common.checkpoints import CheckpointError
from sb3_twm.common.checkpoints.files import ZipReader

KWARGS = dict(TINY_SCHEDULE_KWARGS, learning_starts=40, batch_size=2, imagination_batch_size=8, pretrain_budget=200)


class TouchOnUnpickle:
    """A pickle payload: unpickling it creates ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A small trained MlpPolicy model (Acrobot: finite bounds) and its dataset."""
    folder = tmp_path_factory.mktemp("saved")
    model = TWM("MlpPolicy", gym.make("Acrobot-v1"), seed=0, policy_kwargs=TINY_MLP_POLICY_KWARGS, **KWARGS)
    model.learn(60)
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "dataset.npz")
    model.policy.save(folder / "policy.pth")
    return folder


def members(path: pathlib.Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: pathlib.Path, entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> pathlib.Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return path


def crafted(saved: pathlib.Path, target: pathlib.Path, **replace: bytes | None) -> pathlib.Path:
    """The saved model with members replaced (``data`` given as bytes or a dict patch), removed (None) or added."""
    entries = members(saved / "model.zip")
    for name, content in replace.items():
        key = name.replace("__", ".")
        if content is None:
            entries.pop(key)
        else:
            entries[key] = content
    return write_zip(target, list(entries.items()))


def patched_data(saved: pathlib.Path, **changes: object) -> bytes:
    data = json.loads(members(saved / "model.zip")["data"])
    data.update(changes)
    return json.dumps(data).encode()


def tensor_bytes(value: object) -> bytes:
    buffer = io.BytesIO()
    th.save(value, buffer)
    return buffer.getvalue()


def load_member(saved: pathlib.Path, member: str) -> object:
    return th.load(io.BytesIO(members(saved / "model.zip")[member]), weights_only=True)


def refused(path: pathlib.Path, message: str, **kwargs: object) -> None:
    with pytest.raises(CheckpointError, match=message) as raised:
        TWM.load(path, **kwargs)
    assert str(path) in str(raised.value)


# ------------------------------------------------------------------------------------------------ 1. read once
def test_the_model_file_is_opened_once_and_loads_from_bytes(saved, monkeypatch):
    """No time-of-check/time-of-use gap: what was checked is what is decoded (a file swapped later is never read)."""
    target = str(saved / "model.zip")
    opened = []
    original_open, original_os_open = builtins.open, os.open

    def counting_open(file, *args, **kwargs):
        if str(file) == target:
            opened.append("open")
        return original_open(file, *args, **kwargs)

    def counting_os_open(file, *args, **kwargs):
        if str(file) == target:
            opened.append("os.open")
        return original_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    model = TWM.load(target)
    assert len(opened) == 1 and model.num_timesteps == 60
    monkeypatch.undo()
    from_bytes = TWM.load(io.BytesIO((saved / "model.zip").read_bytes()))
    assert from_bytes.num_timesteps == 60


def _pickled_attribute(marker: pathlib.Path) -> dict[str, str]:
    # SB3's encoding of an attribute it could not write as JSON: a base64 pickle, here one that touches ``marker``.
    return {":type:": "x", ":serialized:": __import__("base64").b64encode(pickle.dumps(TouchOnUnpickle(marker))).decode()}


def test_pickled_attributes_are_refused_without_being_unpickled(saved, tmp_path):
    marker = tmp_path / "code-ran"
    evil = crafted(saved, tmp_path / "evil.zip", data=patched_data(saved, observation_space=_pickled_attribute(marker)))
    refused(evil, "holds pickled attributes")
    assert not marker.exists()


def test_a_file_swapped_during_the_load_is_never_read(saved, tmp_path, monkeypatch):
    # The race of a file replaced between the check of its attributes and their decoding, made deterministic: the
    # file is swapped for one with a pickle right after its 'data' member has been read.
    marker = tmp_path / "code-ran"
    evil = crafted(saved, tmp_path / "evil.zip", data=patched_data(saved, observation_space=_pickled_attribute(marker)))
    target = tmp_path / "model.zip"
    target.write_bytes((saved / "model.zip").read_bytes())
    read_json = ZipReader.read_json

    def swapping_read_json(self, member, max_bytes):
        value = read_json(self, member, max_bytes)
        if member == "data":
            os.replace(evil, target)
        return value

    monkeypatch.setattr(ZipReader, "read_json", swapping_read_json)
    model = TWM.load(target)
    assert not evil.exists() and b":serialized:" in target.read_bytes()  # the swap happened
    assert not marker.exists() and model.num_timesteps == 60


# ------------------------------------------------------------------------------------------------ 2. optimiser states
def test_optimizer_state_of_the_wrong_shape_is_refused(saved, tmp_path):
    state = load_member(saved, "actor_optimizer.pth")
    parameter_id = next(iter(state["state"]))
    state["state"][parameter_id]["exp_avg"] = th.zeros(7, 7)
    path = crafted(saved, tmp_path / "shape.zip", actor_optimizer__pth=tensor_bytes(state))
    refused(path, r"actor_optimizer\.pth.*exp_avg.*shape \(7, 7\)")


def test_optimizer_settings_out_of_range_are_refused(saved, tmp_path):
    for change, message in (({"lr": -1.0}, "lr"), ({"fused": False}, "fused"), ({"betas": (2.0, 0.5)}, "betas")):
        state = load_member(saved, "critic_optimizer.pth")
        state["param_groups"][0].update(change)
        path = crafted(saved, tmp_path / "group.zip", critic_optimizer__pth=tensor_bytes(state))
        refused(path, rf"critic_optimizer\.pth.*{message}")


def test_non_finite_optimizer_state_is_refused(saved, tmp_path):
    state = load_member(saved, "world_model.dynamics_optimizer.pth")
    parameter_id = next(iter(state["state"]))
    state["state"][parameter_id]["exp_avg_sq"] = state["state"][parameter_id]["exp_avg_sq"] * float("nan")
    path = crafted(saved, tmp_path / "nan.zip", world_model__dynamics_optimizer__pth=tensor_bytes(state))
    refused(path, r"dynamics_optimizer\.pth.*not finite")


# ------------------------------------------------------------------------------------------------ 3. memory
@pytest.mark.parametrize("member", ["data", "policy.pth", "system_info.txt"])
def test_compression_bombs_are_refused_before_they_are_read(saved, tmp_path, member):
    entries = members(saved / "model.zip")
    entries[member] = b" " * (80 * 2**20)  # 80 MiB of spaces: about 80 KB deflated
    path = write_zip(tmp_path / "bomb.zip", list(entries.items()), compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2 * 2**20
    if member == "system_info.txt":
        # Only print_system_info reads it.
        refused(path, r"system_info\.txt.*declares", print_system_info=True)
        assert TWM.load(path).num_timesteps == 60
    else:
        refused(path, rf"{member}.*declares \d+ bytes")


def test_json_that_would_inflate_in_memory_is_refused_before_it_is_parsed(saved, tmp_path):
    # Within the byte cap, but millions of empty objects would take gigabytes as Python dicts.
    data = json.loads(members(saved / "model.zip")["data"])
    data["padding"] = [{}] * 1_000_000
    path = crafted(saved, tmp_path / "objects.zip", data=json.dumps(data).encode())
    refused(path, r"data.*holds 10\d{5} JSON objects and arrays, more than the 100000")


# ------------------------------------------------------------------------------------------------ 4. tensors
def test_pytorch_variables_cannot_set_other_tensors(saved, tmp_path):
    variables = load_member(saved, "pytorch_variables.pth")
    variables["policy.actor.0.weight"] = th.full((32, 16), float("nan"))
    path = crafted(saved, tmp_path / "variables.zip", pytorch_variables__pth=tensor_bytes(variables))
    refused(path, r"pytorch_variables\.pth.*policy\.actor\.0\.weight")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda state, key: state[key].fill_(float("nan")), "not finite"),
        (lambda state, key: state.__setitem__(key, state[key].double()), "float64"),
        (lambda state, key: state.__setitem__(key, state[key].to(th.complex64)), "complex64"),
        (lambda state, key: state.__setitem__(key, state[key][:1]), "shape"),
        (lambda state, key: state.__setitem__("extra.weight", th.zeros(1)), "extra.weight"),
    ],
)
def test_bad_weights_are_refused(saved, tmp_path, change, message):
    state = load_member(saved, "policy.pth")
    key = next(name for name in state if name.endswith("weight"))
    change(state, key)
    path = crafted(saved, tmp_path / "weights.zip", policy__pth=tensor_bytes(state))
    refused(path, rf"policy\.pth.*{message}")


# ------------------------------------------------------------------------------------------------ 5. structure
def test_a_file_cannot_remove_attributes_of_the_model(saved, tmp_path):
    path = crafted(saved, tmp_path / "dropped.zip", data=patched_data(saved, _twm_dropped_attributes=["policy"]))
    model = TWM.load(path)
    assert isinstance(model.policy, TWMPolicy) and "_twm_dropped_attributes" not in vars(model)


def test_duplicate_members_are_refused(saved, tmp_path):
    entries = list(members(saved / "model.zip").items())
    path = write_zip(tmp_path / "duplicate.zip", [*entries, ("data", entries[0][1])])
    refused(path, r"more than once.*data")


def test_dataset_duplicates_positions_and_observations_are_checked(saved, tmp_path):
    model = TWM.load(saved / "model.zip")
    with np.load(saved / "dataset.npz") as npz:
        arrays = dict(npz)
    metadata = json.loads(arrays["metadata"].tobytes())

    def dataset(name: str, **changes: object) -> pathlib.Path:
        changed = {**arrays, **{key: value for key, value in changes.items() if key != "metadata"}}
        text = json.dumps({**metadata, **changes.get("metadata", {})})
        text = text.replace('"NESTED"', "[" * 100_000 + "]" * 100_000)  # JSON nested deeper than Python parses
        changed["metadata"] = np.frombuffer(text.encode(), np.uint8)
        np.savez(tmp_path / name, **changed)
        return tmp_path / name

    observations = arrays["observations"].copy()
    observations[0, 0, 0] = 99.0  # Acrobot's cosines are within [-1, 1]
    # Finite values beyond the bounds are what some envs emit: they load, with a warning naming the file.
    with pytest.warns(UserWarning, match="outside the observation space's bounds") as warned:
        model.load_replay_buffer(dataset("outside.npz", observations=observations))
    assert str(tmp_path / "outside.npz") in str(warned[0].message)
    assert model.replay_buffer.observations[0, 0, 0] == 99.0
    observations[0, 0, 0] = np.nan
    cases = {
        dataset("nan.npz", observations=observations): "non-finite observations",
        dataset("pos.npz", metadata={"pos": True}): "pos=",
        dataset("nested.npz", metadata={"temperature": "NESTED"}): "metadata",
    }
    entries = [(name, content) for name, content in members(saved / "dataset.npz").items()]
    cases[write_zip(tmp_path / "twice.npz", [*entries, entries[1]])] = "more than once"
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as raised:
            model.load_replay_buffer(path)
        assert str(path) in str(raised.value)


# ------------------------------------------------------------------------------------------------ 6. clear errors
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"buffer_size": "many"}, "buffer_size"),
        ({"gamma": "high"}, "gamma"),
        ({"num_timesteps": "HUGE"}, "data"),  # a 5,000-digit integer (written below): Python refuses to parse it
        ({"action_space": {"__twm__": "Discrete", "n": -1, "start": 0}}, "action_space"),
        (
            {"observation_space": {"__twm__": "Box", "shape": [6], "dtype": "<U8", "low": 0, "high": 1}},
            r"observation_space.*'<U8' is not a plain numeric dtype",
        ),
        ({"ep_info_buffer": {"__twm__": "deque", "maxlen": -1, "items": []}}, "ep_info_buffer"),
        ({"device": "cuda:7"}, "device"),
        ({"_checkpoint": 1}, "_checkpoint"),
        ({"_checkpoint": {"version": 1, "rng": {"numpy": "x", "python": 3}}}, r"random-generator.*numpy's state"),
        (
            {"policy_kwargs": {"activation_fn": {"__twm__": "class", "module": "subprocess", "qualname": "Popen"}}},
            r"policy_kwargs.*subprocess\.Popen is not one a checkpoint may name",
        ),
        ({"learning_rate": {"__twm__": "schedule", "class": "os.system", "value": 1}}, "learning_rate"),
        ({"n_envs": 0}, "n_envs"),
        ({"_n_updates": -3}, "_n_updates"),
    ],
)
def test_malformed_data_gives_an_error_naming_the_file_and_the_field(saved, tmp_path, changes, field):
    data = patched_data(saved, **changes).replace(b'"HUGE"', b"9" * 5000)
    path = crafted(saved, tmp_path / "bad.zip", data=data)
    refused(path, field)


def test_a_missing_member_is_named(saved, tmp_path):
    refused(crafted(saved, tmp_path / "no_rng.zip", pytorch_variables__pth=None), r"pytorch_variables\.pth")
    refused(crafted(saved, tmp_path / "no_policy.zip", policy__pth=None), r"policy\.pth")


def test_wrong_random_generator_tensors_are_refused(saved, tmp_path):
    variables = load_member(saved, "pytorch_variables.pth")
    variables["_torch_rng_state"] = th.zeros(7, dtype=th.float64)
    path = crafted(saved, tmp_path / "rng.zip", pytorch_variables__pth=tensor_bytes(variables))
    refused(path, r"_torch_rng_state")


# ------------------------------------------------------------------------------------------------ 7. policy files
def test_policy_files_load_without_unpickling(saved, tmp_path):
    policy = TWMPolicy.load(saved / "policy.pth")
    observation = np.zeros(6, np.float32)
    assert (
        policy.predict(observation, deterministic=True)[0]
        == TWM.load(saved / "model.zip").predict(observation, deterministic=True)[0]
    )
    marker = tmp_path / "code-ran"
    th.save({"state_dict": {}, "data": TouchOnUnpickle(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        TWMPolicy.load(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_non_regular_files_are_refused_at_once(tmp_path, kind):
    path = tmp_path / "model.zip"
    if kind == "device":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        TWM.load(path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        TWMPolicy.load(path)


def test_a_full_disk_names_the_file_being_written(saved, tmp_path, monkeypatch):
    model = TWM.load(saved / "model.zip")
    real_fsync = os.fsync

    def full(descriptor: int) -> None:
        real_fsync(descriptor)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device.*again\.zip") as raised:
        model.save(tmp_path / "again.zip")
    assert raised.value.errno == errno.ENOSPC
    assert not list(tmp_path.glob(".again.zip.*"))  # the temporary file is removed
