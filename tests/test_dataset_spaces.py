"""
Every observation space TWM accepts can be checkpointed and resumed: for each case of the matrix in
``tests/spaces_worker.py`` (Box with infinite or huge bounds, float32/float64, bool and int8, uint8 images channel
first and last, 1-D and multi-dimensional, observations beyond the declared bounds; 1 and 2 envs; with and without
VecNormalize) the dataset file round-trips its arrays and space into a fresh model, and ``learn(N)``, save, new
process, load, ``learn(M)`` equals the uninterrupted run bit for bit.
"""

import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import spaces_worker as worker
import torch as th

from sb3_twm import TWM

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Run the reference and the resuming worker once for all cases (two processes, one after the other)."""
    root = tmp_path_factory.mktemp("spaces")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    for mode in ("reference", "resume"):
        completed = subprocess.run(
            [sys.executable, str(TESTS / "spaces_worker.py"), mode, str(root)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
    return root


@pytest.mark.parametrize("case", worker.case_names())
def test_dataset_round_trips_and_training_resumes_exactly(case: str, runs: pathlib.Path) -> None:
    folder = runs / case
    for mode in ("reference", "resume"):
        error = folder / f"{mode}.error"
        assert not error.exists(), f"{mode} failed:\n{error.read_text()[-3000:] if error.exists() else ''}"

    # The dataset file round-trips into a fresh model: every array, and the space.
    statistics = folder / "vecnormalize.pkl"
    fresh = worker.make_model(case, worker.make_env(case, statistics if statistics.exists() else None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.load_replay_buffer(folder / "dataset.npz")
    # Observations beyond the declared bounds (as the env emitted them) load, with a warning; no other case warns.
    outside = [warning for warning in caught if "outside the observation space's bounds" in str(warning.message)]
    assert len(outside) == ("exceeds-bounds" in case), [str(warning.message) for warning in caught]
    saved = np.load(folder / "arrays.npz")
    for name in worker.ARRAYS:
        original, loaded = saved[name], getattr(fresh.replay_buffer, name)
        assert loaded.dtype == original.dtype and loaded.shape == original.shape, name
        np.testing.assert_array_equal(loaded, original, err_msg=name)
    _, n_envs, _ = worker.parse(case)
    expected_space = fresh.observation_space
    assert fresh.replay_buffer.observation_space == expected_space and fresh.replay_buffer.n_envs == n_envs
    loaded_model = TWM.load(folder / "model.zip")
    assert loaded_model.observation_space == expected_space
    np.testing.assert_array_equal(loaded_model.observation_space.low, expected_space.low)
    np.testing.assert_array_equal(loaded_model.observation_space.high, expected_space.high)
    assert fresh.replay_buffer.dones.shape == (fresh.replay_buffer.buffer_size, n_envs)

    # learn(N), save, load in a new process, learn(M) == learn(N), set_env(fresh env), learn(M).
    reference = th.load(folder / "reference.pt", weights_only=True)
    resumed = th.load(folder / "resume.pt", weights_only=True)
    assert reference.keys() == resumed.keys()
    assert reference["counters"][0] == worker.FIRST_STEPS + worker.MORE_STEPS
    different = sorted(key for key in reference if not th.equal(reference[key], resumed[key]))
    assert not different, f"the resumed run differs from the uninterrupted one in {different[:10]}"
