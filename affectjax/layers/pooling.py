"""Pooling over padded axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `x` (B, T, ...) over the positions where `mask` (B, T) is nonzero; zero for
  a row without any (the divisor is at least 1)."""
  w = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def masked_mean_std(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Statistics pooling: [mean, std] of `x` (B, T, D) over real positions, (B, 2D)."""
  mean = masked_mean(x, mask)
  var = masked_mean(jnp.square(x - mean[:, None]), mask)
  return jnp.concatenate([mean, jnp.sqrt(var + 1e-6)], axis=-1)


def layer_weighted_sum(hidden: jax.Array, logits: jax.Array, normalize: bool = True):
  """SUPERB's weighted sum of an encoder's layers (Yang et al. 2021): `hidden` (B, L, T, D)
  -> (B, T, D) with weights softmax(`logits`) (L,); with `normalize`, each layer is first
  layer-normalised over D without scale or bias (s3prl's featurizer), so layers of
  different sizes weigh by the learnt weights alone."""
  h = hidden.astype(jnp.float32)
  if normalize:
    mean = h.mean(-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(jnp.square(h - mean).mean(-1, keepdims=True) + 1e-5)
  return jnp.einsum('l,bltd->btd', jax.nn.softmax(logits.astype(jnp.float32)), h)
