"""
The dynamics model: a Transformer-XL over interleaved (z, action, reward) tokens that predicts, at each action token,
the next latent, the reward and the discount.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch as th
from torch import nn

from sb3_twm.common.networks import create_mlp, kaiming_init
from sb3_twm.world_model.transformer_xl import KeyValueCache, TransformerXL


class DynamicsPrediction(NamedTuple):
    """What the dynamics model predicts for each step (read at that step's action token)."""

    z_logits: th.Tensor  # (B, S, K, C) logits of the next latent
    reward: th.Tensor  # (B, S) mean of the (transformed) reward of the step
    discount_logits: th.Tensor  # (B, S) Bernoulli logits of the discount after the step
    hidden: th.Tensor  # (B, S, D) transformer state at the action token


class DynamicsMemory(NamedTuple):
    """
    The Transformer-XL recurrence memory carried through imagination. Its caches are extended in place by each step:
    continue only from the memory the last step returned.
    """

    caches: tuple[KeyValueCache, ...]  # per layer, keys and values of the M cached tokens
    steps: th.Tensor  # (M,) step index of each cached token
    episodes: th.Tensor  # (B, M) episode index of each cached token (a done starts a new one)


def attention_mask(
    query_steps: th.Tensor,
    query_episodes: th.Tensor,
    key_steps: th.Tensor,
    key_episodes: th.Tensor,
    memory_length: int,
) -> th.Tensor:
    """
    Which keys each query token may attend to: earlier or same tokens (keys are ordered, the queries are the last
    ones), at most ``memory_length`` steps back, and only within the same episode.

    :param query_steps: ``(Q,)`` step of each query token.
    :param query_episodes: ``(B, Q)`` episode of each query token.
    :param key_steps: ``(K,)`` step of each key token (the queries are the last ``Q`` keys).
    :param key_episodes: ``(B, K)``.
    :param memory_length: How many steps back a token may look.
    :return: ``(B, Q, K)`` boolean mask.
    """
    num_queries, num_keys = query_steps.shape[0], key_steps.shape[0]
    query_positions = th.arange(num_keys - num_queries, num_keys, device=key_steps.device)
    causal = query_positions[:, None] >= th.arange(num_keys, device=key_steps.device)[None]
    window = key_steps[None] >= query_steps[:, None] - memory_length
    same_episode = query_episodes[:, :, None] == key_episodes[:, None, :]
    return (causal & window)[None] & same_episode


class DynamicsModel(nn.Module):
    """
    The world model's dynamics: embeddings of z, action and reward, a Transformer-XL, and the prediction heads.

    :param num_actions: Size of the discrete action space, or with ``continuous_actions`` the length of the action
        vectors.
    :param latent_categoricals: Number of categoricals of z.
    :param latent_classes: Number of classes of each categorical.
    :param embed_dim: Transformer width.
    :param num_heads: Attention heads.
    :param head_dim: Width of each head.
    :param num_layers: Transformer layers.
    :param feedforward_dim: Feed-forward width.
    :param memory_length: How many steps the memory (and the attention window) spans.
    :param z_head_dims: Hidden widths of the next-latent head.
    :param reward_head_dims: Hidden widths of the reward head.
    :param discount_head_dims: Hidden widths of the discount head.
    :param dropout: Dropout in the transformer and the heads.
    :param activation_fn: Activation.
    :param input_rewards: Feed rewards back as tokens (the paper's choice); otherwise tokens are (z, action) only.
    :param discount_factor: Initial bias of the discount head (a logit, as in the reference).
    :param continuous_actions: Actions are float vectors (``Box`` actions scaled to ``[-1, 1]``), embedded by a linear
        layer and the activation as rewards are; otherwise integer actions with an embedding table.
    """

    def __init__(
        self,
        num_actions: int,
        latent_categoricals: int = 32,
        latent_classes: int = 32,
        embed_dim: int = 256,
        num_heads: int = 4,
        head_dim: int = 64,
        num_layers: int = 10,
        feedforward_dim: int = 1024,
        memory_length: int = 16,
        z_head_dims: Sequence[int] = (512, 512, 512, 512),
        reward_head_dims: Sequence[int] = (256, 256, 256, 256),
        discount_head_dims: Sequence[int] = (256, 256, 256, 256),
        dropout: float = 0.1,
        activation_fn: type[nn.Module] = nn.SiLU,
        input_rewards: bool = True,
        discount_factor: float = 0.99,
        continuous_actions: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("num_actions", num_actions), ("embed_dim", embed_dim), ("num_heads", num_heads),
                            ("head_dim", head_dim), ("num_layers", num_layers), ("feedforward_dim", feedforward_dim),
                            ("memory_length", memory_length)):  # fmt: skip
            if int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if embed_dim % 2 != 0:
            raise ValueError(f"embed_dim must be even (sinusoidal positions), got {embed_dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_actions = num_actions
        self.continuous_actions = continuous_actions
        self.latent_categoricals = latent_categoricals
        self.latent_classes = latent_classes
        self.memory_length = memory_length
        self.input_rewards = input_rewards
        self.tokens_per_step = 3 if input_rewards else 2
        # The memory holds `memory_length` whole steps plus the (z, action) tokens of the step in progress.
        self.memory_tokens = memory_length * self.tokens_per_step + 2
        # Room for four more steps: the caches move their tokens to the front once every four steps at most.
        self.cache_capacity = self.memory_tokens + 4 * self.tokens_per_step
        latent_dim = latent_categoricals * latent_classes

        self.z_embedding = nn.Sequential(nn.Linear(latent_dim, embed_dim), activation_fn())
        self.action_embedding: nn.Module
        if continuous_actions:
            self.action_embedding = nn.Sequential(nn.Linear(num_actions, embed_dim), activation_fn())
        else:
            self.action_embedding = nn.Embedding(num_actions, embed_dim)
        self.reward_embedding = nn.Sequential(nn.Linear(1, embed_dim), activation_fn()) if input_rewards else None
        continuous_embedding = self.action_embedding if continuous_actions else None
        for embedding in (self.z_embedding, self.reward_embedding, continuous_embedding):
            if embedding is not None:
                kaiming_init(embedding, last_layer_linear=False)
        self.transformer = TransformerXL(embed_dim, num_heads, head_dim, num_layers, feedforward_dim, dropout, activation_fn)

        def head(output_dim: int, hidden_dims: Sequence[int]) -> nn.Sequential:
            mlp = create_mlp(embed_dim, output_dim, hidden_dims, activation_fn, dropout, pre_activation=True)
            kaiming_init(mlp)
            return mlp

        self.z_head = head(latent_dim, z_head_dims)
        self.reward_head = head(1, reward_head_dims)
        self.discount_head = head(1, discount_head_dims)
        nn.init.constant_(self.discount_head[-1].bias, discount_factor)

    def _predict(self, hidden: th.Tensor) -> DynamicsPrediction:
        # hidden: (B, S, D) at the action tokens
        z_logits = self.z_head(hidden).view(*hidden.shape[:-1], self.latent_categoricals, self.latent_classes)
        return DynamicsPrediction(
            z_logits, self.reward_head(hidden).squeeze(-1), self.discount_head(hidden).squeeze(-1), hidden
        )

    def _step_tokens(self, z: th.Tensor, actions: th.Tensor) -> th.Tensor:
        # z: (B, S, K*C), actions: (B, S) long or (B, S, A) float -> (B, S, 2, D)
        return th.stack([self.z_embedding(z), self.action_embedding(actions)], dim=2)

    def forward(self, z: th.Tensor, actions: th.Tensor, rewards: th.Tensor, dones: th.Tensor) -> DynamicsPrediction:
        """
        Predict for every step of whole sequences at once (training): tokens
        ``z_0 a_0 r_0 ... z_{S-2} a_{S-2} r_{S-2} z_{S-1} a_{S-1}``.

        :param z: ``(B, S, K*C)`` latents.
        :param actions: ``(B, S)`` actions taken at those latents (``(B, S, A)`` with ``continuous_actions``).
        :param rewards: ``(B, S-1)`` rewards of the first ``S-1`` steps (fed back as tokens).
        :param dones: ``(B, S-1)`` whether an episode ended after each of the first ``S-1`` steps.
        :return: Predictions for every step: step t predicts z_{t+1}, r_t and the discount after step t.
        """
        # z: (B, S, K*C); actions: (B, S) or (B, S, A); rewards, dones: (B, S-1)
        num_steps = actions.shape[1]
        tokens = self._step_tokens(z, actions)  # (B, S, 2, D)
        if self.input_rewards:
            reward_tokens = self.reward_embedding(rewards.unsqueeze(-1))  # (B, S-1, D)
            reward_tokens = th.cat([reward_tokens, th.zeros_like(reward_tokens[:, :1])], dim=1)
            tokens = th.cat([tokens, reward_tokens.unsqueeze(2)], dim=2)  # (B, S, 3, D)
        tokens = tokens.flatten(1, 2)[:, : num_steps * self.tokens_per_step - (self.tokens_per_step - 2)]
        steps = th.arange(num_steps, device=z.device).repeat_interleave(self.tokens_per_step)[: tokens.shape[1]]
        step_episodes = th.cat([th.zeros_like(dones[:, :1], dtype=th.long), dones.long().cumsum(1)], dim=1)  # (B, S)
        episodes = step_episodes[:, steps]
        mask = attention_mask(steps, episodes, steps, episodes, self.memory_length)
        hidden = self.transformer(tokens, mask)
        action_hidden = hidden[:, 1 :: self.tokens_per_step]  # (B, S, D)
        return self._predict(action_hidden)

    def _trim(self, caches: tuple[KeyValueCache, ...], steps: th.Tensor, episodes: th.Tensor) -> DynamicsMemory:
        keep = self.memory_tokens
        for cache in caches:
            cache.keep_last(keep)
        return DynamicsMemory(caches, steps[-keep:], episodes[:, -keep:])

    @th.no_grad()
    def start_memory(self, z: th.Tensor, actions: th.Tensor) -> DynamicsMemory:
        """
        Build the memory from one real step ``(z, action)``, the context that imagination starts from (inference: no
        gradients flow through the memory).

        :param z: ``(B, K*C)``.
        :param actions: ``(B,)`` (``(B, A)`` with ``continuous_actions``).
        :return: The memory (2 tokens per layer).
        """
        tokens = self._step_tokens(z[:, None], actions[:, None]).flatten(1, 2)  # (B, 2, D)
        steps = th.zeros(2, dtype=th.long, device=z.device)
        episodes = th.zeros(z.shape[0], 2, dtype=th.long, device=z.device)
        caches = tuple(KeyValueCache(self.cache_capacity) for _ in self.transformer.layers)
        self.transformer(tokens, attention_mask(steps, episodes, steps, episodes, self.memory_length), caches, num_outputs=1)
        return self._trim(caches, steps, episodes)

    @th.no_grad()
    def step(
        self,
        memory: DynamicsMemory,
        previous_rewards: th.Tensor,
        previous_dones: th.Tensor,
        z: th.Tensor,
        actions: th.Tensor,
    ) -> tuple[DynamicsPrediction, DynamicsMemory]:
        """
        One step with the memory (inference): only the new tokens ``r_{t-1}, z_t, a_t`` are computed.

        :param memory: Memory ending with the previous step's ``(z, action)`` tokens (extended in place).
        :param previous_rewards: ``(B,)`` reward of the previous step (real or predicted), fed back as a token.
        :param previous_dones: ``(B,)`` whether an episode ended after the previous step.
        :param z: ``(B, K*C)`` the new latent.
        :param actions: ``(B,)`` the action taken at it (``(B, A)`` with ``continuous_actions``).
        :return: The prediction for this step (``(B, 1, ...)`` tensors) and the updated memory.
        """
        last_step = memory.steps[-1]
        last_episode = memory.episodes[:, -1]  # (B,)
        new_episode = last_episode + previous_dones.long()
        new_tokens = self._step_tokens(z[:, None], actions[:, None]).flatten(1, 2)  # (B, 2, D)
        new_steps = (last_step + 1).repeat(2)
        new_episodes = new_episode[:, None].expand(-1, 2)
        if self.input_rewards:
            reward_token = self.reward_embedding(previous_rewards[:, None, None])  # (B, 1, D)
            new_tokens = th.cat([reward_token, new_tokens], dim=1)
            new_steps = th.cat([last_step.view(1), new_steps])
            new_episodes = th.cat([last_episode[:, None], new_episodes], dim=1)
        key_steps = th.cat([memory.steps, new_steps])
        key_episodes = th.cat([memory.episodes, new_episodes], dim=1)
        mask = attention_mask(new_steps, new_episodes, key_steps, key_episodes, self.memory_length)
        # Only the action token's output is read: the last layer computes no other.
        hidden = self.transformer(new_tokens, mask, memory.caches, num_outputs=1)
        return self._predict(hidden), self._trim(memory.caches, key_steps, key_episodes)
