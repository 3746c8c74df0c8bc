"""
A Transformer-XL decoder (Dai et al., 2019): post-norm layers with relative multi-head self-attention, sinusoidal
relative positional encodings with global biases ``u`` and ``v``, and a recurrence memory of cached layer inputs.

Attention runs through ``scaled_dot_product_attention``: the content term ``(q + u) k`` is its regular product and the
positional term ``(q + v) W_r R_{i-j}`` plus the mask enter as an additive bias. The memory is kept as the keys and
values of the cached layer inputs, so each new token costs one projection.
"""

import math

import torch as th
import torch.nn.functional as F
from torch import nn


def sinusoidal_encoding(length: int, embed_dim: int, device: th.device) -> th.Tensor:
    """
    Sinusoidal encodings of the distances ``0 .. length - 1``.

    :param length: Number of distances.
    :param embed_dim: Encoding size (even).
    :param device: Device of the result.
    :return: ``(length, embed_dim)``: ``[sin(d f), cos(d f)]``.
    """
    inverse_frequencies = 1.0 / (10000 ** (th.arange(0, embed_dim, 2, device=device, dtype=th.float32) / embed_dim))
    angles = th.arange(length, device=device, dtype=th.float32)[:, None] * inverse_frequencies[None]
    return th.cat([angles.sin(), angles.cos()], dim=-1)


class RelativeMultiheadAttention(nn.Module):
    """
    Multi-head self-attention with Transformer-XL relative positions.

    :param embed_dim: Model width.
    :param num_heads: Number of heads.
    :param head_dim: Width of each head.
    :param dropout: Dropout on the attention probabilities.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner_dim = num_heads * head_dim
        self.qkv_projection = nn.Linear(embed_dim, 3 * inner_dim, bias=False)
        self.position_projection = nn.Linear(embed_dim, inner_dim, bias=False)
        self.output_projection = nn.Linear(inner_dim, embed_dim, bias=False)
        self.dropout = dropout
        # The reference scales by the model width, not the head width (spec section 10, quirk 3).
        self.scale = 1.0 / math.sqrt(embed_dim)

    def forward(
        self,
        x: th.Tensor,
        cache: tuple[th.Tensor, th.Tensor] | None,
        positions: th.Tensor,
        content_bias: th.Tensor,
        position_bias: th.Tensor,
        mask: th.Tensor,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        # x: (B, Q, D) new tokens; cache: keys and values (B, H, M, dh) of the memory tokens of this layer
        # positions: (K, D) encodings of distances 0..K-1 with K = M + Q
        # content_bias, position_bias: (H, dh); mask: (B, Q, K) True where attention is allowed
        batch_size, num_queries, _ = x.shape
        queries, keys, values = (
            self.qkv_projection(x).view(batch_size, num_queries, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # each (B, H, Q, dh)
        if cache is not None:
            # Keys and values of the memory are those of its cached layer inputs: reuse them instead of recomputing.
            keys = th.cat([cache[0], keys], dim=2)
            values = th.cat([cache[1], values], dim=2)
        num_keys = keys.shape[2]
        relative = self.position_projection(positions).view(num_keys, self.num_heads, self.head_dim).transpose(0, 1)
        # Positional scores by distance, then moved to key columns: distance(i, j) = (K - Q + i) - j.
        by_distance = (queries + position_bias[:, None]) @ relative.transpose(-1, -2)  # (B, H, Q, K)
        query_index = th.arange(num_keys - num_queries, num_keys, device=x.device)[:, None]
        distance = (query_index - th.arange(num_keys, device=x.device)[None]).clamp_(0, num_keys - 1)
        position_scores = by_distance.gather(-1, distance.expand(batch_size, self.num_heads, -1, -1))
        bias = (position_scores * self.scale).masked_fill_(~mask[:, None], float("-inf"))
        attended = F.scaled_dot_product_attention(
            queries + content_bias[:, None],
            keys,
            values,
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        output = self.output_projection(attended.transpose(1, 2).reshape(batch_size, num_queries, -1))
        return output, (keys.detach(), values.detach())


class TransformerXLLayer(nn.Module):
    """
    Post-norm decoder layer: ``x = LN(x + Drop(Attn(x)))``, ``x = LN(x + Drop(W2 Drop(act(W1 x))))``.

    :param embed_dim: Model width.
    :param num_heads: Number of heads.
    :param head_dim: Width of each head.
    :param feedforward_dim: Hidden width of the feed-forward block.
    :param dropout: Dropout probability.
    :param activation_fn: Activation of the feed-forward block.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        feedforward_dim: int,
        dropout: float,
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        self.attention = RelativeMultiheadAttention(embed_dim, num_heads, head_dim, dropout)
        self.attention_norm = nn.LayerNorm(embed_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(embed_dim, feedforward_dim),
            activation_fn(),
            nn.Dropout(dropout),
            nn.Linear(feedforward_dim, embed_dim),
        )
        self.feedforward_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: th.Tensor,
        cache: tuple[th.Tensor, th.Tensor] | None,
        positions: th.Tensor,
        content_bias: th.Tensor,
        position_bias: th.Tensor,
        mask: th.Tensor,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        # x: (B, Q, D) -> (B, Q, D), and the keys/values over memory and new tokens (B, H, M + Q, dh)
        attended, key_values = self.attention(x, cache, positions, content_bias, position_bias, mask)
        x = self.attention_norm(x + self.dropout(attended))
        return self.feedforward_norm(x + self.dropout(self.feedforward(x))), key_values


class TransformerXL(nn.Module):
    """
    A stack of Transformer-XL layers sharing the global biases ``u`` and ``v``.

    :param embed_dim: Model width.
    :param num_heads: Number of heads.
    :param head_dim: Width of each head.
    :param num_layers: Number of layers.
    :param feedforward_dim: Hidden width of the feed-forward blocks.
    :param dropout: Dropout probability (attention, residual branches, positional encodings).
    :param activation_fn: Activation of the feed-forward blocks.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 4,
        head_dim: int = 64,
        num_layers: int = 10,
        feedforward_dim: int = 1024,
        dropout: float = 0.1,
        activation_fn: type[nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.layers = nn.ModuleList(
            TransformerXLLayer(embed_dim, num_heads, head_dim, feedforward_dim, dropout, activation_fn)
            for _ in range(num_layers)
        )
        self.content_bias = nn.Parameter(th.empty(num_heads, head_dim))  # u
        self.position_bias = nn.Parameter(th.empty(num_heads, head_dim))  # v
        nn.init.xavier_uniform_(self.content_bias)
        nn.init.xavier_uniform_(self.position_bias)
        self.position_dropout = nn.Dropout(dropout)

    def forward(
        self, x: th.Tensor, mask: th.Tensor, memory: tuple[tuple[th.Tensor, th.Tensor], ...] | None = None
    ) -> tuple[th.Tensor, tuple[tuple[th.Tensor, th.Tensor], ...]]:
        """
        :param x: New token embeddings ``(B, Q, D)``.
        :param mask: ``(B, Q, M + Q)`` True where a query may attend to a key (memory keys first).
        :param memory: Per layer, the keys and values ``(B, H, M, dh)`` of the memory tokens, or None. Caching keys
            and values is Transformer-XL's memory of layer inputs with their projections applied once.
        :return: The outputs ``(B, Q, D)`` and, per layer, the keys and values over memory and new tokens
            ``(B, H, M + Q, dh)`` (detached), from which the caller keeps the newest tokens as the next memory.
        """
        num_memory = 0 if memory is None else memory[0][0].shape[2]
        positions = self.position_dropout(sinusoidal_encoding(num_memory + x.shape[1], self.embed_dim, x.device))
        key_values = []
        for index, layer in enumerate(self.layers):
            x, layer_key_values = layer(
                x, None if memory is None else memory[index], positions, self.content_bias, self.position_bias, mask
            )
            key_values.append(layer_key_values)
        return x, tuple(key_values)
