"""Contrastive losses as pure functions over the global batch.

Every loss takes L2-normalised embeddings (N, D) and a `mask` (N,) marking real rows:
a padded row is never a positive, a negative or an anchor. Each loss is written once, over
a block of rows scored against columns (`_*_rows`), so the two forms share it:

- the global form (`clip_loss`, `sigmoid_loss`, `supervised_contrastive_loss`) scores
  every row against every column (N x N logits; under `jax.jit` with a sharded batch XLA
  gathers the columns where it needs them);
- the memory-lean form (`sharded(...)`, for all three) runs inside `jax.shard_map`: each device scores
  its own rows against columns all-gathered over the batch axes (`jax.lax.all_gather`),
  local x global logits, computed `BLOCK` columns at a time (online log-sum-exp, scores
  recomputed in the backward pass) so per-device memory grows linearly in the global
  batch; the partial sums are added with `jax.lax.psum`. Both forms give the same value
  and gradients (tests/test_contrastive.py).
"""

from __future__ import annotations

import functools
import inspect
import itertools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

_NEG = -1e9  # Logit of an excluded column: exp underflows to exactly 0 in float32.
BLOCK = 1024  # Columns scored at once by the lean form.


def _scores(rows, cols, scale, bias=0.0):
  return scale * jnp.einsum('rd,cd->rc', rows.astype(jnp.float32),
                            cols.astype(jnp.float32)) + bias


def _over_blocks(rows, columns, block, fn, init):
  """Reduces `fn(carry, rows, *columns_block)` over blocks of `block` columns (all at
  once when `block` is None); `columns` are arrays with the column axis first, the last
  of them the columns' validity (padding added here is invalid). Each block's scores are
  recomputed in the backward pass (jax.checkpoint), so memory holds one rows x block tile
  at a time."""
  n = columns[0].shape[0]
  if block is None or n <= block:
    return fn(init, rows, *columns)
  pad = -n % block
  blocked = tuple(jnp.pad(c, ((0, pad),) + ((0, 0),) * (c.ndim - 1))
                  .reshape(-1, block, *c.shape[1:]) for c in columns)

  @jax.checkpoint
  def body(carry, xs):
    return fn(carry, rows, *xs), None
  return jax.lax.scan(body, init, blocked)[0]


def _online_lse(top, total, s):
  """One block of a running log-sum-exp per row: (max so far, sum of exp(s - max))."""
  new_top = jnp.maximum(top, s.max(axis=1))
  return new_top, total * jnp.exp(top - new_top) + jnp.exp(s - new_top[:, None]).sum(axis=1)


def _zero_per_row(rows):
  # Derived from `rows` so that inside shard_map the scan carry varies like the rows do.
  return rows[:, 0].astype(jnp.float32) * 0.0


def _clip_rows(rows, cols, own, row_valid, col_valid, scale, block=None):
  """Sum over `rows` of -log softmax(scale * rows @ cols.T) at the row's own pair;
  `own` (r, D) are the rows' own partners (row i's positive column)."""
  def step(carry, r, c, v):
    return _online_lse(*carry, jnp.where(v[None, :] > 0, _scores(r, c, scale), _NEG))
  zero = _zero_per_row(rows)
  top, total = _over_blocks(rows, (cols, col_valid), block, step, (zero + _NEG, zero))
  positive = scale * jnp.sum(rows.astype(jnp.float32) * own.astype(jnp.float32), axis=1)
  return jnp.sum((top + jnp.log(total) - positive) * row_valid)


def _sigmoid_rows(rows, cols, own, row_valid, col_valid, scale, bias, block=None):
  """Sum over every real (row, column) pair of -log sigmoid(z * (scale <r, c> + bias)),
  z = +1 for the row's own pair and -1 otherwise: every pair counted as a negative,
  softplus(l), then the own pair corrected to softplus(-l)."""
  def step(total, r, c, v):
    s = _scores(r, c, scale, bias)
    return total + jnp.sum(jnp.where(v[None, :] > 0, jax.nn.softplus(s), 0.0), axis=1)
  negatives = _over_blocks(rows, (cols, col_valid), block, step, _zero_per_row(rows))
  l_own = scale * jnp.sum(rows.astype(jnp.float32) * own.astype(jnp.float32), axis=1) + bias
  per_row = negatives + jax.nn.softplus(-l_own) - jax.nn.softplus(l_own)
  return jnp.sum(per_row * row_valid)


def _supcon_rows(rows, cols, row_index, row_valid, col_valid, row_labels, col_labels,
                 temperature, block=None):
  """Sum over anchors of the mean -log p(positive) (Khosla et al.'s L_out), written as
  log-sum-exp over the anchor's other real columns minus the mean positive logit, both
  accumulated block by block; `row_index` are the rows' column numbers (self-exclusion).
  Returns (sum over anchors with a positive, number of such anchors)."""
  def step(carry, r, c, lab, idx, v):
    top, total, pos_sum, count = carry
    s = _scores(r, c, 1.0 / temperature)
    keep = (v[None, :] > 0) & (row_index[:, None] != idx[None, :])
    top, total = _online_lse(top, total, jnp.where(keep, s, _NEG))
    positive = keep & (row_labels[:, None] == lab[None, :])
    return (top, total, pos_sum + jnp.sum(jnp.where(positive, s, 0.0), axis=1),
            count + jnp.sum(positive, axis=1).astype(jnp.float32))
  zero = _zero_per_row(rows)
  idx = jnp.arange(cols.shape[0], dtype=jnp.int32)
  top, total, pos_sum, count = _over_blocks(
      rows, (cols, col_labels, idx, col_valid), block, step, (zero + _NEG, zero, zero, zero))
  per_anchor = top + jnp.log(total) - pos_sum / jnp.maximum(count, 1.0)
  # An anchor without any positive in the batch contributes nothing.
  has = row_valid * (count > 0)
  return jnp.sum(jnp.where(has > 0, per_anchor, 0.0)), jnp.sum(has)


def _ones(x):
  return jnp.ones(x.shape[0], jnp.float32)


def clip_loss(a: jax.Array, b: jax.Array, scale: jax.Array, mask: jax.Array | None = None):
  """Symmetric InfoNCE between paired embeddings (CLIP).

  Row i of `a` and row i of `b` are a positive pair; every other real row of the other
  modality is a negative. The loss averages the a->b and b->a cross-entropies.

  Args:
    a: (N, D) normalised embeddings of one modality.
    b: (N, D) normalised embeddings of the other, row-aligned with `a`.
    scale: scalar logit scale (the inverse temperature, e.g. exp of a learnt log-scale).
    mask: (N,) 1 for real rows, 0 for padding; default all real.

  Returns:
    A scalar: mean over real rows and both directions.

  Example:
    >>> a = jnp.eye(3); clip_loss(a, a, 10.0) < clip_loss(a, a[::-1], 10.0)
    Array(True, dtype=bool)

  Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
  Supervision", ICML 2021.
  """
  mask = _ones(a) if mask is None else mask.astype(jnp.float32)
  total = _clip_rows(a, b, b, mask, mask, scale) + _clip_rows(b, a, a, mask, mask, scale)
  return total / (2.0 * jnp.maximum(jnp.sum(mask), 1.0))


def sigmoid_loss(a: jax.Array, b: jax.Array, scale: jax.Array, bias: jax.Array,
                 mask: jax.Array | None = None):
  """Pairwise sigmoid loss (SigLIP): every (i, j) pair is an independent binary problem,
  positive when i == j.

  Args:
    a, b: (N, D) normalised, row-aligned embeddings.
    scale: scalar logit scale (SigLIP initialises log-scale at log 10).
    bias: scalar logit bias (SigLIP initialises it at -10).
    mask: (N,) 1 for real rows; pairs with a padded row are left out.

  Returns:
    A scalar: the sum over real pairs divided by the number of real rows, as in the paper.

  Example:
    >>> a = jnp.eye(3); sigmoid_loss(a, a, 10.0, -5.0) < sigmoid_loss(a, a[::-1], 10.0, -5.0)
    Array(True, dtype=bool)

  Reference: Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023.
  """
  mask = _ones(a) if mask is None else mask.astype(jnp.float32)
  return _sigmoid_rows(a, b, b, mask, mask, scale, bias) / jnp.maximum(jnp.sum(mask), 1.0)


def supervised_contrastive_loss(x: jax.Array, labels: jax.Array, temperature: float = 0.1,
                                mask: jax.Array | None = None):
  """Supervised contrastive loss (SupCon, L_out): every other row with the same label is a
  positive of an anchor, all other real rows are negatives. Several views of an example
  (e.g. its modalities) are stacked as separate rows with the same label.

  Args:
    x: (N, D) normalised embeddings.
    labels: (N,) integer classes.
    temperature: tau (0.1 in the paper).
    mask: (N,) 1 for real rows.

  Returns:
    A scalar: the mean over anchors that have at least one positive.

  Example:
    >>> x = jnp.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
    >>> supervised_contrastive_loss(x, jnp.array([0, 0, 1, 1])) < 0.01
    Array(True, dtype=bool)

  Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
  """
  mask = _ones(x) if mask is None else mask.astype(jnp.float32)
  idx = jnp.arange(x.shape[0], dtype=jnp.int32)
  total, anchors = _supcon_rows(x, x, idx, mask, mask, labels, labels, temperature)
  return total / jnp.maximum(anchors, 1.0)


def pairs(modalities) -> list[tuple[str, str]]:
  """Every unordered pair of modalities, in a fixed order."""
  return list(itertools.combinations(sorted(modalities), 2))


def multimodal_loss(embeddings: Mapping[str, jax.Array], mask, loss: str, scale, bias=0.0,
                    *, mesh=None, axes=None) -> tuple[jax.Array, dict]:
  """Mean over every pair of modalities of `loss` ('infonce' | 'sigmoid'); with `mesh`
  and `axes` (the mesh axes of the batch), the memory-lean shard_map form.

  Returns (scalar, {'loss/<a>_<b>': per-pair value})."""
  per = {}
  for m1, m2 in pairs(embeddings):
    a, b = embeddings[m1], embeddings[m2]
    if loss == 'infonce':
      fn = clip_loss if mesh is None else sharded(clip_loss, mesh, axes)
      per[f'loss/{m1}_{m2}'] = fn(a, b, scale, mask)
    elif loss == 'sigmoid':
      fn = sigmoid_loss if mesh is None else sharded(sigmoid_loss, mesh, axes)
      per[f'loss/{m1}_{m2}'] = fn(a, b, scale, bias, mask)
    else:
      raise ValueError(f'config.task.loss: unknown {loss!r} (infonce | sigmoid)')
  return sum(per.values()) / len(per), per


# -- the memory-lean form ------------------------------------------------------------------

def _clip_local(a, b, mask, gather, axes, block, scale):
  """This device's share of `clip_loss` (its rows against every column) and the divisor."""
  b_all, a_all, m_all = gather(b), gather(a), gather(mask)
  n = jax.lax.psum(jnp.sum(mask), axes)
  part = (_clip_rows(a, b_all, b, mask, m_all, scale, block) +
          _clip_rows(b, a_all, a, mask, m_all, scale, block))
  return part, 2.0 * jnp.maximum(n, 1.0)


def _sigmoid_local(a, b, mask, gather, axes, block, scale, bias):
  """This device's share of `sigmoid_loss` and the divisor."""
  n = jax.lax.psum(jnp.sum(mask), axes)
  part = _sigmoid_rows(a, gather(b), b, mask, gather(mask), scale, bias, block)
  return part, jnp.maximum(n, 1.0)


def _supcon_local(x, labels, mask, gather, axes, block, temperature):
  """This device's share of `supervised_contrastive_loss` and the divisor. Its rows are
  global rows [i * r, (i + 1) * r), i its index over `axes` in the order all_gather
  concatenates them."""
  r = x.shape[0]
  row_index = jax.lax.axis_index(axes) * r + jnp.arange(r, dtype=jnp.int32)
  part, anchors = _supcon_rows(x, gather(x), row_index, mask, gather(mask), labels,
                               gather(labels), temperature, block)
  return part, jnp.maximum(jax.lax.psum(anchors, axes), 1.0)


# Each loss's shard_map form: (its rows' part of the sum, the global divisor).
_LOCAL = {clip_loss: _clip_local, sigmoid_loss: _sigmoid_local,
          supervised_contrastive_loss: _supcon_local}


def sharded(loss_fn: Callable, mesh, axes, block: int | None = BLOCK) -> Callable:
  """The shard_map form of `clip_loss`, `sigmoid_loss` or `supervised_contrastive_loss`
  over `mesh`, with the batch split over the mesh axes `axes` (a name or a tuple of
  names): the same signature and value. Each device scores its own rows against the
  all-gathered columns, `block` columns at a time with the scores recomputed in the
  backward pass, so its memory holds (rows / devices) x block scores: linear, not
  quadratic, in the global batch."""
  axes = axes if isinstance(axes, tuple) else (axes,)
  spec = P(axes)

  def gather(x):
    return jax.lax.all_gather(x, axes, axis=0, tiled=True)

  local_part = _LOCAL.get(loss_fn)
  if local_part is None:
    raise ValueError(f'sharded: no shard_map form of {loss_fn.__name__}')

  def local(a, b, mask, *scalars):
    part, denom = local_part(a, b, mask, gather, axes, block, *scalars)
    return jax.lax.psum(part, axes) / denom

  def run(a, b, mask, scalars):
    mask = _ones(a) if mask is None else mask.astype(jnp.float32)
    scalars = [jnp.asarray(s, jnp.float32) for s in scalars]
    fn = jax.shard_map(local, mesh=mesh,
                       in_specs=(spec, spec, spec) + (P(),) * len(scalars), out_specs=P())
    return fn(a, b, mask, *scalars)

  signature = inspect.signature(loss_fn)

  @functools.wraps(loss_fn)
  def wrapped(*args, **kwargs):  # The loss's own arguments: two arrays, scalars, mask.
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    a, b, *scalars, mask = bound.arguments.values()
    return run(a, b, mask, scalars)

  return wrapped
