"""Checks that need several JAX processes; run by tests/test_distributed.py through
`affectjax.distributed.launch(program=...)`, each process with 4 CPU devices.

  python tests/multiprocess_checks.py OUT.npz

Every process computes; process 0 writes what the test compares against one process:
  ids_<n>:    the ids of an n-example split after the trainer's evaluation path
              (process-sliced eval batches -> global arrays -> gathered, padding
              dropped), for split sizes that do not divide the processes or the batch;
  clip_loss:  the memory-lean InfoNCE over a 16-row global batch split over 8 devices
              in 2 processes (its negatives must come from both processes);
  rows_<p>:   the rows of a global batch of 16 that process p reads.
"""

import sys

import numpy as np


def main(out: str) -> None:
  from affectjax import distributed
  assert distributed.initialize(), 'run through affectjax.distributed.launch'
  import jax
  import jax.numpy as jnp
  from jax.experimental import multihost_utils
  from affectjax import experiment, losses, sharding
  from affectjax.data import pipeline
  from affectjax.data.base import ArraySource

  mesh = sharding.make_mesh({'data': -1, 'model': 1})
  rules = sharding.LOGICAL_AXIS_RULES
  results = {}
  eval_step = jax.jit(lambda b: {'id': b['id'] * 1, 'valid': b['mask']})
  for n in (13, 16, 37):
    source = ArraySource({'id': np.arange(n, dtype=np.int32)})
    gathered = []
    for local in pipeline.eval_batches(source, 8, mesh, rules):
      out_ = {k: experiment._gather(v) for k, v in
              eval_step(pipeline.to_global(local, mesh, rules)).items()}
      gathered.append(out_['id'][out_['valid'] > 0])
    results[f'ids_{n}'] = np.concatenate(gathered)

  rows = pipeline.process_rows(16, mesh, rules)
  all_rows = multihost_utils.process_allgather(rows)
  for p in range(jax.process_count()):
    results[f'rows_{p}'] = np.asarray(all_rows[p])

  rng = np.random.default_rng(0)
  a = rng.normal(size=(16, 5)).astype(np.float32)
  b = (a + 0.5 * rng.normal(size=(16, 5))).astype(np.float32)
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  b /= np.linalg.norm(b, axis=1, keepdims=True)
  batch = pipeline.to_global({'a': a[rows], 'b': b[rows],
                              'mask': np.ones(16, np.float32)[rows]}, mesh, rules)
  loss_fn = losses.sharded(losses.clip_loss, mesh, ('data',), block=4)
  value = jax.jit(lambda x: loss_fn(x['a'], x['b'], jnp.float32(5.0), x['mask']))(batch)
  results['clip_loss'] = np.asarray(value.addressable_shards[0].data)  # Replicated.
  if jax.process_index() == 0:
    np.savez(out, **results)


if __name__ == '__main__':
  main(sys.argv[1])
