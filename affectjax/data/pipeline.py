"""grain input pipelines that end in sharded global arrays.

Every process reads only its slice of each global batch and the slices are put
together with `jax.make_array_from_process_local_data`, so one host and many
hosts run the same code. The training iterator's state (a small dict) is
checkpointed with the model, which makes resumption exact.
"""

from __future__ import annotations

from typing import Iterator

import grain
import jax
import numpy as np

from affectjax import sharding as sharding_lib
from affectjax.data.base import ArraySource


def local_batch_size(global_batch_size: int) -> int:
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f'config.train.batch_size={global_batch_size} is not divisible by the '
                     f'{count} processes')
  return global_batch_size // count


def train_dataset(source: ArraySource, global_batch_size: int, seed: int) -> grain.DatasetIterator:
  """Endless, seeded, shuffled batches of this process's share of `source`.

  Shuffling is by grain's index permutation (a new one per epoch, derived from
  `seed`); batches are index batches gathered in one call, with `mask` = 1.
  """
  local_bs = local_batch_size(global_batch_size)
  ds = grain.MapDataset.range(len(source))
  ds = ds[jax.process_index()::jax.process_count()]
  if len(ds) < local_bs:
    raise ValueError(f'train split has {len(ds)} examples per process, fewer than one '
                     f'batch of {local_bs}')
  ds = ds.seed(seed).shuffle().repeat(None).batch(local_bs, drop_remainder=True)
  ds = ds.map(lambda idx: _with_mask(source.get_batch(np.asarray(idx)), None))
  return iter(ds.to_iter_dataset())


def _with_mask(batch: dict, valid: np.ndarray | None) -> dict:
  n = len(next(iter(batch.values())))
  batch['mask'] = np.ones(n, np.float32) if valid is None else valid.astype(np.float32)
  return batch


def eval_batches(source: ArraySource, global_batch_size: int) -> Iterator[dict]:
  """Every example once, in order; the last batch is padded and masked out.

  Each global batch covers indices [b*G, (b+1)*G); process p takes its contiguous
  part, so concatenating the gathered batches restores the original order.
  """
  local_bs = local_batch_size(global_batch_size)
  n = len(source)
  start = jax.process_index() * local_bs
  for b in range(-(-n // global_batch_size)):
    idx = b * global_batch_size + start + np.arange(local_bs)
    valid = idx < n
    batch = source.get_batch(np.where(valid, idx, 0))
    for k, v in batch.items():
      v[~valid] = 0
    yield _with_mask(batch, valid)


def to_global(batch: dict, mesh, rules) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded over the data axis."""
  return {
      k: jax.make_array_from_process_local_data(
          sharding_lib.batch_sharding(mesh, rules, np.ndim(v)), np.asarray(v))
      for k, v in batch.items()
  }


def batch_spec(element_spec: dict, global_batch_size: int, mesh, rules) -> dict:
  """ShapeDtypeStructs of a global batch, for ahead-of-time compilation."""
  spec = {
      k: jax.ShapeDtypeStruct(
          (global_batch_size, *shape), dtype,
          sharding=sharding_lib.batch_sharding(mesh, rules, 1 + len(shape)))
      for k, (shape, dtype) in element_spec.items()
  }
  spec['mask'] = jax.ShapeDtypeStruct((global_batch_size,), np.float32,
                                      sharding=sharding_lib.batch_sharding(mesh, rules, 1))
  return spec
