"""Optimiser helpers: the reference's Adam step (zero_grad, backward, clip the global norm, step)."""

import warnings
from collections.abc import Iterable
from typing import Any

import torch as th
from torch import nn

OPTIMIZER_KEYS = ("lr", "eps", "weight_decay", "betas", "max_grad_norm")


def make_adam(parameters: Iterable[nn.Parameter], settings: dict[str, Any]) -> th.optim.Adam:
    """
    Adam with L2-style weight decay, as in the reference.

    :param parameters: Parameters to optimise.
    :param settings: ``lr``, ``eps``, ``weight_decay`` and optionally ``betas`` (``max_grad_norm`` is read elsewhere).
    :return: The optimiser.
    """
    unknown = set(settings) - set(OPTIMIZER_KEYS)
    if unknown:
        raise ValueError(f"Unknown optimizer settings {sorted(unknown)}: use only {list(OPTIMIZER_KEYS)}.")
    for key in ("eps", "max_grad_norm"):
        if key in settings and not settings[key] > 0:
            raise ValueError(f"Optimizer setting {key} must be positive, got {settings[key]}.")
    # A learning rate of 0 is allowed: rl-zoo3 loads models for evaluation with learning_rate=0.
    for key in ("lr", "weight_decay"):
        if key in settings and not settings[key] >= 0:
            raise ValueError(f"Optimizer setting {key} must be >= 0, got {settings[key]}.")
    kwargs = {key: settings[key] for key in ("lr", "eps", "weight_decay", "betas") if key in settings}
    # The fused kernel performs the same Adam update in one pass over the parameters (several times faster than the
    # per-tensor loop PyTorch uses on CPU by default); tests/test_optimized_paths.py checks it against the plain one.
    return th.optim.Adam(parameters, fused=True, **kwargs)


def optimizer_step(
    optimizer: th.optim.Optimizer,
    loss: th.Tensor,
    max_grad_norm: float,
    skip_non_finite: bool = False,
    name: str = "model",
) -> tuple[th.Tensor, bool]:
    """
    ``zero_grad``, ``backward``, clip the global gradient norm, ``step``.

    With ``skip_non_finite``, a step whose gradient norm is not finite (a NaN/inf loss; clipping spreads a non-finite
    norm to every gradient) is skipped with a ``RuntimeWarning``: weights and optimiser state stay unchanged. The check
    costs one host-device synchronisation (nothing on CPU).

    :param optimizer: The optimiser.
    :param loss: Scalar loss.
    :param max_grad_norm: Clipping threshold of the global gradient norm.
    :param skip_non_finite: Skip the step when the gradient norm is not finite.
    :param name: What the optimiser trains, for the warning.
    :return: The gradient norm before clipping (a tensor, so no host sync happens for it) and whether the step ran.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if skip_non_finite and parameters and not bool(th.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        warnings.warn(
            f"TWM skipped an update of the {name}: its loss or gradients are not finite (NaN/inf). Its weights and "
            "optimizer state are unchanged; train/skipped_updates counts the skipped updates.",
            RuntimeWarning,
            stacklevel=3,
        )
        return grad_norm, False
    optimizer.step()
    return grad_norm, True


class BaseLearningRates:
    """
    The learning rates optimisers were created with, so that a schedule can scale all of them in proportion.

    :param optimizers: The optimisers (their current learning rates are the base ones).
    """

    def __init__(self, optimizers: Iterable[th.optim.Optimizer]) -> None:
        self._rates = [(optimizer, [group["lr"] for group in optimizer.param_groups]) for optimizer in optimizers]

    def scale(self, factor: float) -> None:
        """:param factor: Set every learning rate to its base value times this."""
        for optimizer, base_rates in self._rates:
            for group, base_rate in zip(optimizer.param_groups, base_rates):
                group["lr"] = base_rate * factor
