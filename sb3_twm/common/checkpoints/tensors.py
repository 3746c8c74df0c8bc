"""
State dicts from a checkpoint, checked against the networks and optimisers they are for before anything is loaded:
``torch.load(weights_only=True)`` only guarantees plain tensors and containers, not that they fit (an optimiser state
of the wrong shape makes the fused Adam write out of bounds) or are finite.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import torch as th
from torch import nn

from sb3_twm.common.checkpoints.errors import CheckpointError
from sb3_twm.common.checkpoints.files import ZipReader

# Pickle framing per tensor and container, on top of the tensors' bytes (generous: torch writes far less).
_OVERHEAD_BYTES = 2**20
_OVERHEAD_PER_TENSOR = 2048


def tensor_bytes(tensors: list[th.Tensor]) -> int:
    """:return: The most bytes a ``torch.save`` of these tensors (plus containers) can take."""
    return _OVERHEAD_BYTES + sum(t.numel() * t.element_size() + _OVERHEAD_PER_TENSOR for t in tensors)


def read_state(reader: ZipReader, member: str, max_bytes: int, device: th.device) -> Any:
    """
    :param reader: The checkpoint zip.
    :param member: A ``.pth`` member.
    :param max_bytes: The most it may hold.
    :param device: Where its tensors go.
    :return: Its content, loaded with ``weights_only=True`` (plain tensors and containers only, never code).
    """
    content = reader.read(member, max_bytes)
    try:
        return th.load(io.BytesIO(content), map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError) as error:
        raise CheckpointError(
            f"{reader.name}: member {member!r} is not a plain state dict ({type(error).__name__}: {str(error)[:300]})"
        ) from None


def check_tensor(where: str, tensor: Any, expected: th.Tensor) -> None:
    """Raise unless ``tensor`` is a finite tensor of ``expected``'s shape and dtype."""
    if not isinstance(tensor, th.Tensor):
        raise CheckpointError(f"{where} is a {type(tensor).__name__}, not a tensor")
    if tensor.dtype != expected.dtype:
        raise CheckpointError(f"{where} has dtype {str(tensor.dtype).replace('torch.', '')}, expected "
                              f"{str(expected.dtype).replace('torch.', '')}")  # fmt: skip
    if tensor.shape != expected.shape:
        raise CheckpointError(f"{where} has shape {tuple(tensor.shape)}, expected {tuple(expected.shape)}")
    if tensor.is_floating_point() and not bool(th.isfinite(tensor).all()):
        raise CheckpointError(f"{where} holds values that are not finite (NaN/inf)")


def check_module_state(where: str, module: nn.Module, state: Any) -> None:
    """
    Raise unless ``state`` is exactly ``module``'s state dict: the same keys, tensors of the same shapes and dtypes,
    all finite.

    :param where: The file and member, for messages.
    :param module: The network it is for.
    :param state: What the member holds.
    """
    expected = module.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} is not a state dict")
    unexpected, missing = sorted(set(state) - set(expected), key=str), sorted(set(expected) - set(state))
    if unexpected or missing:
        raise CheckpointError(f"{where} does not fit the network: unexpected keys {unexpected[:5]}, missing {missing[:5]}")
    for key, tensor in expected.items():
        check_tensor(f"{where}: {key!r}", state[key], tensor)


_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")


def check_optimizer_state(where: str, optimizer: th.optim.Optimizer, state: Any) -> None:
    """
    Raise unless ``state`` is a state of ``optimizer`` (an Adam): the same parameter groups and settings keys, valid
    settings (``lr`` and ``weight_decay`` >= 0, ``eps`` > 0, ``betas`` in [0, 1), the flags as configured), and for
    each parameter a finite step count and moments of the parameter's shape and dtype.

    :param where: The file and member, for messages.
    :param optimizer: The optimiser it is for.
    :param state: What the member holds.
    """
    fresh = optimizer.state_dict()
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} is not an optimizer state (keys 'state' and 'param_groups')")
    groups = state["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise CheckpointError(f"{where} has {len(groups) if isinstance(groups, list) else '?'} parameter groups, "
                              f"expected {len(fresh['param_groups'])}")  # fmt: skip
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, (group, expected) in enumerate(zip(groups, fresh["param_groups"])):
        _check_group(f"{where}: parameter group {index}", group, expected)
    states = state["state"]
    if not isinstance(states, dict) or not set(states) <= set(range(len(parameters))):
        raise CheckpointError(f"{where}: the per-parameter states are not indexed by the {len(parameters)} parameters")
    for parameter_id, parameter_state in states.items():
        parameter = parameters[parameter_id]
        if not isinstance(parameter_state, dict) or set(parameter_state) != set(_ADAM_STATE):
            raise CheckpointError(f"{where}: the state of parameter {parameter_id} does not have Adam's {_ADAM_STATE}")
        step = parameter_state["step"]
        if not (isinstance(step, th.Tensor) and step.numel() == 1 and step.dtype == th.float32):
            raise CheckpointError(f"{where}: the step count of parameter {parameter_id} is not a float32 scalar tensor")
        if not (math.isfinite(float(step)) and float(step) >= 0):
            raise CheckpointError(f"{where}: the step count of parameter {parameter_id} is {float(step)}")
        for key in ("exp_avg", "exp_avg_sq"):
            check_tensor(f"{where}: {key} of parameter {parameter_id}", parameter_state[key], parameter.detach())
        if bool((parameter_state["exp_avg_sq"] < 0).any()):
            raise CheckpointError(f"{where}: exp_avg_sq of parameter {parameter_id} is negative")


def _check_group(where: str, group: Any, expected: dict[str, Any]) -> None:
    if not isinstance(group, dict) or set(group) != set(expected):
        keys = sorted(group) if isinstance(group, dict) else group
        raise CheckpointError(f"{where} has the settings {keys}, expected {sorted(expected)}")
    if group["params"] != expected["params"]:
        raise CheckpointError(f"{where} holds parameters {str(group['params'])[:80]}, expected {expected['params']}")
    ranges = {"lr": (0.0, math.inf, True), "weight_decay": (0.0, math.inf, True), "eps": (0.0, math.inf, False)}
    for key, (low, high, closed) in ranges.items():
        value = group[key]
        valid = _number(value) and (low <= value if closed else low < value) and value < high
        if not valid:
            raise CheckpointError(f"{where}: {key}={value!r} is out of range")
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_number(b) and 0.0 <= b < 1.0 for b in betas)):
        raise CheckpointError(f"{where}: betas={betas!r} are not two numbers in [0, 1)")
    for key, value in expected.items():
        if key not in (*ranges, "betas", "params") and group[key] != value:
            raise CheckpointError(f"{where}: {key}={group[key]!r}, expected {value!r} (as the optimizer is configured)")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
