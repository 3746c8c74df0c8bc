"""Small network builders and the initialisation schemes of the reference implementation."""

import itertools
from collections.abc import Sequence

import torch as th
from torch import nn


def create_mlp(
    input_dim: int,
    output_dim: int,
    hidden_dims: Sequence[int],
    activation_fn: type[nn.Module] = nn.SiLU,
    dropout: float = 0.0,
    pre_activation: bool = False,
    post_activation: bool = False,
) -> nn.Sequential:
    """
    Build ``Linear`` layers with an activation between them.

    :param input_dim: Size of the input features.
    :param output_dim: Size of the output features.
    :param hidden_dims: Widths of the hidden layers.
    :param activation_fn: Activation between layers.
    :param dropout: Dropout probability after each hidden activation (0 disables it).
    :param pre_activation: Apply the activation to the input first (the dynamics heads read a raw hidden state).
    :param post_activation: Apply the activation after the last layer too.
    :return: The network.
    """
    layers: list[nn.Module] = [activation_fn()] if pre_activation else []
    dims = [input_dim, *hidden_dims]
    for in_dim, out_dim in itertools.pairwise(dims):
        layers += [nn.Linear(in_dim, out_dim), activation_fn()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dims[-1], output_dim))
    if post_activation:
        layers.append(activation_fn())
    return nn.Sequential(*layers)


def kaiming_init(module: nn.Module, last_layer_linear: bool = True) -> None:
    """
    Kaiming-uniform weights with the gain of ReLU (used for SiLU too, as the reference does) and zero biases
    for every ``Linear``/``Conv2d`` in ``module``; the last such layer gets a linear gain when it feeds no activation.

    Transposed convolutions, embeddings and norms keep PyTorch's defaults (reference behaviour).

    :param module: Module whose layers to initialise.
    :param last_layer_linear: Whether the last layer is an output layer (gain 1).
    """
    layers = [m for m in module.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    for index, layer in enumerate(layers):
        is_last = last_layer_linear and index == len(layers) - 1
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="linear" if is_last else "relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def orthogonal_init(module: nn.Module) -> None:
    """
    Orthogonal weights (gain sqrt(2), the last layer gain 1) and zero biases for every ``Linear`` in ``module``,
    as the reference initialises its actor and critic.

    :param module: Module whose layers to initialise.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for index, layer in enumerate(layers):
        nn.init.orthogonal_(layer.weight, gain=1.0 if index == len(layers) - 1 else 2**0.5)
        nn.init.zeros_(layer.bias)


def flatten_batch(x: th.Tensor, num_data_dims: int) -> tuple[th.Tensor, tuple[int, ...]]:
    """
    Merge all leading batch axes into one.

    :param x: Tensor of shape ``(*batch, *data)``.
    :param num_data_dims: Number of trailing data axes.
    :return: The tensor of shape ``(prod(batch), *data)`` and the original batch shape.
    """
    batch_shape = tuple(x.shape[: x.dim() - num_data_dims])
    return x.reshape(-1, *x.shape[x.dim() - num_data_dims :]), batch_shape
