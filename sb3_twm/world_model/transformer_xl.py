"""
A Transformer-XL decoder (Dai et al., 2019): post-norm layers with relative multi-head self-attention, sinusoidal
relative positional encodings with global biases ``u`` and ``v``, and a recurrence memory of cached layer inputs.

Attention runs through ``scaled_dot_product_attention``: the content term ``(q + u) k`` is its regular product and the
positional term ``(q + v) W_r R_{i-j}`` plus the mask enter as an additive bias. The memory is kept as the keys and
values of the cached layer inputs, so each new token costs one projection, in preallocated buffers, so each new token
is one write.
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


def relative_distances(num_queries: int, num_keys: int, device: th.device) -> th.Tensor:
    """
    The distance of each key from each query when the queries are the last ``num_queries`` keys.

    :param num_queries: Number of query tokens ``Q``.
    :param num_keys: Number of key tokens ``K``.
    :param device: Device of the result.
    :return: ``(Q, K)`` long: ``(K - Q + i) - j``, clamped to ``[0, K - 1]`` (keys after a query are masked anyway).
    """
    query_index = th.arange(num_keys - num_queries, num_keys, device=device)[:, None]
    return (query_index - th.arange(num_keys, device=device)[None]).clamp_(0, num_keys - 1)


class KeyValueCache:
    """
    One layer's recurrence memory for inference: the keys and values of cached tokens in preallocated buffers. A step
    writes only its new tokens (concatenating would copy the whole memory every step) and reads a view of the last
    tokens. Mutated in place: a memory that has been extended must not be used again from an earlier state.

    :param capacity: Tokens the buffers hold; when an extension does not fit, the kept tokens move to the front.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: th.Tensor | None = None  # (B, H, capacity, dh)
        self.values: th.Tensor | None = None
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def extend(self, keys: th.Tensor, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Append new tokens.

        :param keys: ``(B, H, Q, dh)`` keys of the new tokens.
        :param values: ``(B, H, Q, dh)``.
        :return: Views of the keys and values of all kept tokens, the new ones last: ``(B, H, len, dh)`` each.
        """
        num_new = keys.shape[2]
        if self.keys is None:
            batch_size, num_heads, _, head_dim = keys.shape
            shape = (batch_size, num_heads, max(self.capacity, num_new), head_dim)
            self.keys = keys.new_empty(shape)
            self.values = values.new_empty(shape)
        assert self.values is not None
        if self.end + num_new > self.keys.shape[2]:
            kept = len(self)
            if kept + num_new > self.keys.shape[2]:
                raise ValueError(
                    f"A key/value cache of {self.keys.shape[2]} tokens cannot hold {kept} kept and {num_new} new tokens: "
                    "keep fewer tokens (keep_last) or create it with a larger capacity."
                )
            # Cloned first: source and destination overlap.
            self.keys[:, :, :kept] = self.keys[:, :, self.start : self.end].clone()
            self.values[:, :, :kept] = self.values[:, :, self.start : self.end].clone()
            self.start, self.end = 0, kept
        self.keys[:, :, self.end : self.end + num_new] = keys
        self.values[:, :, self.end : self.end + num_new] = values
        self.end += num_new
        return self.keys[:, :, self.start : self.end], self.values[:, :, self.start : self.end]

    def keep_last(self, num_tokens: int) -> None:
        """
        Forget all but the newest tokens (nothing is copied).

        :param num_tokens: How many of the newest tokens to keep.
        """
        self.start = max(self.start, self.end - num_tokens)


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
        # The reference scales by the model width, not the head width (jrobine/twm, nets.py, the attention of its
        # Transformer-XL); kept, as its weights and results assume it.
        self.scale = 1.0 / math.sqrt(embed_dim)

    def forward(
        self,
        x: th.Tensor,
        cache: KeyValueCache | None,
        positions: th.Tensor,
        content_bias: th.Tensor,
        position_bias: th.Tensor,
        mask: th.Tensor,
        distance: th.Tensor,
        num_outputs: int | None = None,
    ) -> th.Tensor:
        # x: (B, Q, D) new tokens; cache: this layer's keys and values of M memory tokens, extended by the new ones
        # positions: (K, D) encodings of distances 0..K-1 with K = M + Q
        # content_bias, position_bias: (H, dh); mask: (B, Q, K) True where attention is allowed
        # distance: (Q, K) long, (K - Q + i) - j clamped to [0, K-1], the same for every layer (relative_distances)
        # returns the outputs of the last num_outputs (default Q) tokens: (B, n, D)
        batch_size, num_tokens, _ = x.shape
        queries, keys, values = (
            self.qkv_projection(x).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # each (B, H, Q, dh)
        if num_outputs is not None:
            # Every new token's key and value joins the memory, but only the last tokens' outputs are read.
            first = num_tokens - num_outputs
            queries, mask, distance = queries[:, :, first:], mask[:, first:], distance[first:]
        num_queries = queries.shape[2]
        if cache is not None:
            # Keys and values of the memory are those of its cached layer inputs: reuse them instead of recomputing.
            keys, values = cache.extend(keys, values)
        num_keys = keys.shape[2]
        relative = self.position_projection(positions).view(num_keys, self.num_heads, self.head_dim).transpose(0, 1)
        # Positional scores by distance, then moved to key columns: distance(i, j) = (K - Q + i) - j.
        # One product per head over all batch rows: broadcasting R over the batch would copy it B times.
        shifted = (queries + position_bias[:, None]).transpose(0, 1).reshape(self.num_heads, -1, self.head_dim)
        by_distance = (shifted @ relative.transpose(-1, -2)).view(self.num_heads, batch_size, num_queries, num_keys)
        by_distance = by_distance.transpose(0, 1)  # (B, H, Q, K)
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
        return self.output_projection(attended.transpose(1, 2).reshape(batch_size, num_queries, -1))


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
        cache: KeyValueCache | None,
        positions: th.Tensor,
        content_bias: th.Tensor,
        position_bias: th.Tensor,
        mask: th.Tensor,
        distance: th.Tensor,
        num_outputs: int | None = None,
    ) -> th.Tensor:
        # x: (B, Q, D) -> (B, n, D) for the last n = num_outputs (default Q) tokens
        attended = self.attention(x, cache, positions, content_bias, position_bias, mask, distance, num_outputs)
        x = self.attention_norm(x[:, x.shape[1] - attended.shape[1] :] + self.dropout(attended))
        return self.feedforward_norm(x + self.dropout(self.feedforward(x)))


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
        self._position_cache: dict[tuple[int, int, th.device, bool], tuple[th.Tensor, th.Tensor]] = {}

    def forward(
        self,
        x: th.Tensor,
        mask: th.Tensor,
        memory: tuple[KeyValueCache, ...] | None = None,
        num_outputs: int | None = None,
    ) -> th.Tensor:
        """
        :param x: New token embeddings ``(B, Q, D)``.
        :param mask: ``(B, Q, M + Q)`` True where a query may attend to a key (memory keys first).
        :param memory: Per layer, the cache of the ``M`` memory tokens' keys and values (Transformer-XL's memory of
            layer inputs with their projections applied once), which the new tokens extend in place; None: no memory.
        :param num_outputs: Return the outputs of only the last ``n`` tokens: the last layer then skips the attention
            output and feed-forward block of the others (their keys and values are still computed). None: all.
        :return: The outputs ``(B, n, D)`` (``n = Q`` by default).
        """
        num_keys = x.shape[1] + (0 if memory is None else len(memory[0]))
        encoding, distance = self._relative_positions(num_keys, x.shape[1], x.device)
        positions = self.position_dropout(encoding)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(
                x,
                None if memory is None else memory[index],
                positions,
                self.content_bias,
                self.position_bias,
                mask,
                distance,
                num_outputs if index == last else None,
            )
        return x

    def _relative_positions(self, num_keys: int, num_queries: int, device: th.device) -> tuple[th.Tensor, th.Tensor]:
        # Imagination asks for the same few shapes every step: computed once each (a handful of small kernels saved
        # per step and layer), then reused. Not part of the state: these depend on the shapes only.
        key = (num_keys, num_queries, device, th.is_inference_mode_enabled())
        cached = self._position_cache.get(key)
        if cached is None:
            if len(self._position_cache) >= 64:
                self._position_cache.clear()
            cached = (
                sinusoidal_encoding(num_keys, self.embed_dim, device),
                relative_distances(num_queries, num_keys, device),
            )
            self._position_cache[key] = cached
        return cached
