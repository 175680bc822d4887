"""Multimodal fusion operators (pure functions)."""

from __future__ import annotations

from typing import Sequence

import einops
import jax.numpy as jnp


def append_one(h: jnp.ndarray) -> jnp.ndarray:
  """[h; 1] along the last axis, which keeps lower-order terms in a product."""
  return jnp.concatenate([h, jnp.ones((*h.shape[:-1], 1), h.dtype)], axis=-1)


def tensor_fusion(hs: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Tensor fusion (Zadeh et al., 2017, "Tensor Fusion Network for Multimodal
  Sentiment Analysis", eq. 1): the flattened outer product of [h_m; 1] over modalities.

  Because of the appended 1 the result holds every unimodal feature, every bimodal
  product and every trimodal product.

  Args:
    hs: M arrays of shape (B, d_m).

  Returns:
    (B, prod_m (d_m + 1)), in the order of `hs` (the last modality varies fastest).

  >>> tensor_fusion([jnp.ones((2, 3)), jnp.ones((2, 4))]).shape
  (2, 20)
  """
  z = append_one(hs[0])
  for h in hs[1:]:
    z = einops.rearrange(einops.einsum(z, append_one(h), 'b i, b j -> b i j'),
                         'b i j -> b (i j)')
  return z


def low_rank_fusion(hs: Sequence[jnp.ndarray], factors: Sequence[jnp.ndarray],
                    rank_weights: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """Low-rank multimodal fusion (Liu et al., 2018, "Efficient Low-rank Multimodal
  Fusion with Modality-Specific Factors", eqs. 5-6).

  The fusion weight tensor W (applied to the outer product of [h_m; 1]) is
  factorised as W = sum_r w_r prod_m W_m^(r), so the fused vector is
  sum_r w_r * prod_m ([h_m; 1] @ W_m^(r)) + b without forming the outer product.

  Args:
    hs: M arrays (B, d_m).
    factors: M arrays (R, d_m + 1, F), the modality-specific factors.
    rank_weights: (R,) weights of the rank-one terms.
    bias: (F,).

  Returns:
    (B, F).

  >>> low_rank_fusion([jnp.ones((2, 3))], [jnp.ones((4, 4, 5))], jnp.ones(4), jnp.zeros(5)).shape
  (2, 5)
  """
  prod = None
  for h, w in zip(hs, factors):
    term = einops.einsum(append_one(h), w, 'b d, r d f -> r b f')
    prod = term if prod is None else prod * term
  return einops.einsum(prod, rank_weights, 'r b f, r -> b f') + bias
