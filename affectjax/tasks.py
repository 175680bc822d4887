"""What differs per problem: output size, loss, predictions and metrics."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from affectjax import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Task:
  """Classification (`num_classes` logits) or regression (one score)."""
  name: str
  num_classes: int | None
  loss_name: str
  metrics_name: str
  class_names: tuple[str, ...] | None = None  # Keys of per-class metrics; default indices.

  @property
  def out_dim(self) -> int:
    return self.num_classes if self.name == 'classification' else 1

  def per_example_loss(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    outputs = outputs.astype(jnp.float32)
    if self.loss_name == 'cross_entropy':
      return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
    pred = outputs[..., 0]
    if self.loss_name == 'l1':
      return jnp.abs(pred - labels)
    return jnp.square(pred - labels)

  @staticmethod
  def weights(batch: dict) -> jax.Array:
    """Per-label weights: `mask` marks real examples (not batch padding); for
    padded sequences of labelled utterances `label_mask` marks real utterances."""
    mask = batch['mask']
    if 'label_mask' in batch:
      return mask[:, None] * batch['label_mask']
    return mask

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    """Weighted mean loss; padding (weight 0) contributes nothing."""
    weights = self.weights(batch)
    per = self.per_example_loss(outputs, batch['label'])
    return jnp.sum(per * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  def predictions(self, outputs: jax.Array) -> jax.Array:
    """What metrics need from the model output: logits, or the regression score."""
    outputs = outputs.astype(jnp.float32)
    return outputs if self.name == 'classification' else outputs[..., 0]

  def metric_names(self) -> list[str]:
    """The scalar metrics `metrics` reports (plus the mean `loss` evaluation adds)."""
    if self.name == 'classification':
      out = self.metrics(np.arange(2) % self.num_classes, np.eye(2, self.num_classes))
    else:
      out = self.metrics(np.array([-1.0, 1.0]), np.array([-0.5, 0.5]))
    return sorted([k for k, v in out.items() if isinstance(v, float)] + ['loss'])

  def metrics(self, labels: np.ndarray, preds: np.ndarray) -> dict:
    if self.metrics_name == 'classification':
      return metrics_lib.classification_metrics(labels, preds, self.num_classes,
                                                self.class_names)
    if self.metrics_name == 'sentiment':
      return metrics_lib.sentiment_metrics(labels, preds)
    return metrics_lib.regression_metrics(labels, preds)


def get_task(config) -> Task:
  c = config.task
  if c.name not in ('classification', 'regression'):
    raise ValueError(f'config.task.name: unknown {c.name!r} (classification | regression)')
  if c.loss not in ('cross_entropy', 'l1', 'mse'):
    raise ValueError(f'config.task.loss: unknown {c.loss!r} (cross_entropy | l1 | mse)')
  if (c.name == 'classification') != (c.loss == 'cross_entropy'):
    raise ValueError(f'config.task.loss: {c.loss!r} does not fit task {c.name!r}')
  if c.metrics not in ('classification', 'regression', 'sentiment'):
    raise ValueError(f'config.task.metrics: unknown {c.metrics!r}')
  return Task(c.name, c.num_classes if c.name == 'classification' else None, c.loss, c.metrics)
