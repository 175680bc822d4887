"""Dense layers and MLPs whose parameters carry logical axis names."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affectjax.layers.dropout import dropout


def dense(features: int, axes: tuple[str, str] = ('embed', 'hidden'), *, name=None,
          dtype=jnp.float32, use_bias: bool = True) -> nn.Dense:
  """nn.Dense whose kernel is annotated (in_axis, out_axis) and bias (out_axis,)."""
  return nn.Dense(
      features, name=name, dtype=dtype, use_bias=use_bias,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]))


class MLP(nn.Module):
  """Dropout -> (Dense -> activation) per hidden size; optional linear output layer.

  With `dropout_first` the input is dropped out before the first layer, as in the
  TFN modality subnetworks.
  """
  features: Sequence[int]
  out_features: int | None = None
  dropout: float = 0.0
  dropout_first: bool = True
  activation: Callable = nn.relu
  dtype: str = 'float32'
  dropout_rng_bits: int = 32  # 8: ByteDropout, a cheaper mask (see layers/dropout.py).

  @nn.compact
  def __call__(self, x, *, train: bool):
    dtype = jnp.dtype(self.dtype)
    if self.dropout_first:
      x = dropout(self.dropout, not train, self.dropout_rng_bits)(x)
    for i, f in enumerate(self.features):
      x = self.activation(dense(f, dtype=dtype, name=f'dense_{i}')(x))
      if not self.dropout_first:
        x = dropout(self.dropout, not train, self.dropout_rng_bits)(x)
    if self.out_features is not None:
      x = dense(self.out_features, ('hidden', 'classes'), dtype=dtype, name='out')(x)
    return x
