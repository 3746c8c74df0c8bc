"""The process-wide random generators TWM draws from, captured and restored as plain data (exact resume)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_twm.common.checkpoints.errors import CheckpointError

_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


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
    if not isinstance(state, dict):
        raise CheckpointError(f"the random-generator states are {type(state).__name__}, not an object")

    def check_numpy() -> None:
        assert len(state["numpy"]["key"]) == 624 and 0 <= int(state["numpy"]["pos"]) <= 624

    def check_python() -> None:
        assert len(state["python"]["internal"]) == 625

    def check_torch() -> None:
        torch_state = tensors["torch"]
        assert isinstance(torch_state, th.Tensor) and torch_state.dtype == th.uint8 and torch_state.numel() > 0

    checks = {"numpy's": check_numpy, "Python's": check_python, "torch's": check_torch}
    if "action_space" in state:
        checks["the action space's"] = lambda: make_generator(state["action_space"])
    for generator, check in checks.items():
        try:
            check()
        except (AssertionError, KeyError, TypeError, ValueError, IndexError) as error:
            detail = f" ({type(error).__name__}: {str(error)[:120]})" if str(error) else ""
            raise CheckpointError(
                f"the random-generator states are malformed: {generator} state is missing or not a generator "
                f"state{detail}"
            ) from None


def resume_seed(seed: int, num_timesteps: int) -> int:
    """
    :param seed: The run's seed.
    :param num_timesteps: The env step at which the envs restart.
    :return: The seed of the envs' restart at that step (a pure function: no generator is drawn from).
    """
    return int(np.random.SeedSequence([int(seed) % 2**32, int(num_timesteps)]).generate_state(1)[0] % 2**31)
