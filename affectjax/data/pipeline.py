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


def process_rows(global_batch_size: int, mesh=None, rules=()) -> np.ndarray:
  """The rows of every global batch that this process reads, ascending.

  With a mesh, they are the rows its devices hold under the batch sharding (which is
  how `jax.make_array_from_process_local_data` places a local batch); a topology-aware
  device order may give a process rows that are not one block. Without one: the
  process's contiguous block."""
  if mesh is None:
    local = local_batch_size(global_batch_size)
    return jax.process_index() * local + np.arange(local)
  sharding = sharding_lib.batch_sharding(mesh, rules, 1)
  # Devices that share a batch shard (the model axis) give the same span once.
  spans = sorted({index.indices(global_batch_size)[:2] for (index,) in
                  sharding.addressable_devices_indices_map((global_batch_size,)).values()})
  return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans])


def train_dataset(source: ArraySource, global_batch_size: int, seed: int, mesh=None,
                  rules=()) -> grain.DatasetIterator:
  """Endless, seeded, shuffled batches of this process's share of `source`.

  Shuffling is by grain's index permutation of the whole split (a new one per epoch,
  derived from `seed`), cut into global batches; each process gathers its rows of each
  (`process_rows`) in one call, with `mask` = 1. Every process computes the same
  permutation, so the global batches, and the run, do not depend on how many processes
  read them.
  """
  rows = process_rows(global_batch_size, mesh, rules)
  if len(source) < global_batch_size:
    raise ValueError(f'train split has {len(source)} examples, fewer than one batch of '
                     f'{global_batch_size}')
  ds = grain.MapDataset.range(len(source))
  ds = ds.seed(seed).shuffle().repeat(None).batch(global_batch_size, drop_remainder=True)
  ds = ds.map(lambda idx: _with_mask(source.get_batch(np.asarray(idx)[rows]), None))
  return iter(ds.to_iter_dataset())


def _with_mask(batch: dict, valid: np.ndarray | None) -> dict:
  n = len(next(iter(batch.values())))
  batch['mask'] = np.ones(n, np.float32) if valid is None else valid.astype(np.float32)
  return batch


def eval_batches(source: ArraySource, global_batch_size: int, mesh=None,
                 rules=()) -> Iterator[dict]:
  """Every example once, in order; the last batch is padded and masked out.

  Each global batch covers indices [b*G, (b+1)*G); each process reads its rows of it
  (`process_rows`), so the gathered batches, concatenated, restore the original order.
  """
  rows = process_rows(global_batch_size, mesh, rules)
  n = len(source)
  for b in range(-(-n // global_batch_size)):
    idx = b * global_batch_size + rows
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
