"""The Transformer-XL's relative attention against a plain per-sequence formula (Dai et al. 2019)."""

import math

import torch as th

from sb3_twm.world_model.transformer_xl import (
    KeyValueCache,
    RelativeMultiheadAttention,
    TransformerXL,
    relative_distances,
    sinusoidal_encoding,
)

D, H, DH = 32, 2, 8  # model width 32 with 2 heads of 8: the 1/sqrt(D) scale differs from 1/sqrt(DH) and 1/sqrt(H*DH)


def plain_attention(attention: RelativeMultiheadAttention, x, memory, u, v, mask):
    """
    One sequence at a time, one head at a time, with explicit loops over query and key positions: scores
    ``((q_i + u) . k_j + (q_i + v) . W_r R_{d(i, j)}) / sqrt(D)`` for the distance ``d(i, j)`` from key j back to query
    i, masked, softmax, the values' weighted sum, the output projection.
    """
    weights_q, weights_k, weights_v = attention.qkv_projection.weight.view(3, H * DH, D)
    batch_size, num_queries, _ = x.shape
    outputs = th.zeros(batch_size, num_queries, D)
    for b in range(batch_size):
        sequence = th.cat([memory[b], x[b]]) if memory is not None else x[b]  # (K, D)
        num_keys = sequence.shape[0]
        relative = attention.position_projection(sinusoidal_encoding(num_keys, D, x.device))  # (K, H*DH)
        heads = []
        for h in range(H):
            part = slice(h * DH, (h + 1) * DH)
            q = x[b] @ weights_q[part].T  # (Q, DH)
            k, value = sequence @ weights_k[part].T, sequence @ weights_v[part].T
            scores = th.full((num_queries, num_keys), -math.inf)
            for i in range(num_queries):
                for j in range(num_keys):
                    if mask[b, i, j]:
                        distance = (num_keys - num_queries + i) - j
                        content = (q[i] + u[h]) @ k[j]
                        position = (q[i] + v[h]) @ relative[distance, part]
                        scores[i, j] = (content + position) / math.sqrt(D)
            heads.append(scores.softmax(-1) @ value)
        outputs[b] = attention.output_projection(th.cat(heads, -1))
    return outputs


def setup(batch_size: int = 3, num_queries: int = 5, num_memory: int = 0):
    th.manual_seed(0)
    attention = RelativeMultiheadAttention(D, H, DH, dropout=0.0).eval()
    x = th.randn(batch_size, num_queries, D)
    memory = th.randn(batch_size, num_memory, D) if num_memory else None
    u, v = th.randn(H, DH), th.randn(H, DH)
    num_keys = num_memory + num_queries
    causal = th.arange(num_memory, num_keys)[:, None] >= th.arange(num_keys)[None]
    # Distinct rows: each sequence also hides a different earlier key.
    mask = causal[None].repeat(batch_size, 1, 1)
    for b in range(batch_size):
        mask[b, -1, b] = False
    return attention, x, memory, u, v, mask


def module_attention(attention, x, memory, u, v, mask):
    num_keys = x.shape[1] + (0 if memory is None else memory.shape[1])
    positions = sinusoidal_encoding(num_keys, D, x.device)
    cache = None
    if memory is not None:
        cache = KeyValueCache(num_keys + 4)
        _, keys, values = attention.qkv_projection(memory).view(*memory.shape[:2], 3, H, DH).permute(2, 0, 3, 1, 4)
        cache.extend(keys, values)
    with th.no_grad():
        return attention(x, cache, positions, u, v, mask, relative_distances(x.shape[1], num_keys, x.device))


def test_relative_attention_equals_the_plain_formula_per_sequence():
    attention, x, _, u, v, mask = setup()
    with th.no_grad():
        expected = plain_attention(attention, x, None, u, v, mask)
    th.testing.assert_close(module_attention(attention, x, None, u, v, mask), expected, atol=1e-5, rtol=1e-5)


def test_relative_attention_with_memory_equals_the_plain_formula():
    attention, x, memory, u, v, mask = setup(batch_size=2, num_queries=3, num_memory=4)
    with th.no_grad():
        expected = plain_attention(attention, x, memory, u, v, mask)
    th.testing.assert_close(module_attention(attention, x, memory, u, v, mask), expected, atol=1e-5, rtol=1e-5)


def test_permuting_the_batch_permutes_the_outputs():
    attention, x, _, u, v, mask = setup(batch_size=4)
    permutation = th.tensor([2, 0, 3, 1])
    output = module_attention(attention, x, None, u, v, mask)
    permuted = module_attention(attention, x[permutation], None, u, v, mask[permutation])
    th.testing.assert_close(permuted, output[permutation], atol=1e-6, rtol=1e-6)


def test_relative_distances_count_back_from_each_query():
    # 2 queries, the last 2 of 4 keys: query 0 is key 2, query 1 is key 3; keys after a query clamp to 0.
    assert relative_distances(2, 4, th.device("cpu")).tolist() == [[2, 1, 0, 0], [3, 2, 1, 0]]


def test_reused_positions_give_the_same_outputs_and_gradients_after_inference_mode():
    th.manual_seed(0)
    transformer = TransformerXL(D, H, DH, num_layers=2, feedforward_dim=64, dropout=0.1)
    x = th.randn(2, 5, D)
    mask = (th.arange(5)[:, None] >= th.arange(5)[None]).expand(2, 5, 5)
    with th.inference_mode():  # positions made here are inference tensors: training must not reuse them
        transformer.eval()(x, mask)
    transformer.train()
    outputs = []
    for _ in range(2):  # the second call reuses the positions of the first
        th.manual_seed(1)
        output = transformer(x, mask)
        output.sum().backward()
        outputs.append(output.detach())
    assert th.equal(outputs[0], outputs[1])
    transformer._position_cache.clear()
    th.manual_seed(1)
    assert th.equal(transformer(x, mask).detach(), outputs[0])
