import os

import jax
import numpy as np

from affectjax import sharding
from affectjax.data import base, pipeline


def _source(n=37):
  return base.ArraySource({'x': np.arange(n * 3, dtype=np.float32).reshape(n, 3),
                           'label': np.arange(n, dtype=np.int32)})


def _take(it, k):
  return [next(it)['label'].copy() for _ in range(k)]


def test_train_batches_are_seeded_and_cover_each_epoch():
  src = _source()
  a = _take(pipeline.train_dataset(src, 8, seed=3), 8)
  b = _take(pipeline.train_dataset(src, 8, seed=3), 8)
  c = _take(pipeline.train_dataset(src, 8, seed=4), 8)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  # 37 examples, batch 8, drop_remainder: the first 4 batches are distinct examples.
  first_epoch = np.concatenate(a[:4])
  assert len(np.unique(first_epoch)) == 32
  # Epochs are reshuffled.
  assert not np.array_equal(np.concatenate(a[4:8])[:8], a[0])


def test_iterator_state_resumes_exactly():
  src = _source()
  it = pipeline.train_dataset(src, 8, seed=1)
  _take(it, 5)
  state = it.get_state()
  expected = _take(it, 6)
  resumed = pipeline.train_dataset(src, 8, seed=1)
  resumed.set_state(state)
  assert all(np.array_equal(x, y) for x, y in zip(expected, _take(resumed, 6)))


def test_eval_batches_pad_and_mask():
  src = _source(37)
  batches = list(pipeline.eval_batches(src, 16))
  assert len(batches) == 3
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 37 and mask.shape == (48,)
  np.testing.assert_array_equal(labels[mask > 0], np.arange(37))
  assert (np.concatenate([b['x'] for b in batches])[mask == 0] == 0).all()


def test_global_batches_are_sharded_over_data_axis():
  mesh = sharding.make_mesh({'data': 4, 'model': 2})
  rules = sharding.LOGICAL_AXIS_RULES
  local = next(pipeline.train_dataset(_source(), 8, seed=0))
  glob = pipeline.to_global(local, mesh, rules)
  assert glob['x'].shape == (8, 3)
  # The batch axes: data and fsdp (size 1 here); model replicates.
  assert glob['x'].sharding.spec == jax.sharding.PartitionSpec(('data', 'fsdp'), None)
  assert {s.data.shape for s in glob['x'].addressable_shards} == {(2, 3)}
  assert len(glob['x'].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(glob['label']), local['label'])


def test_processes_preparing_one_dataset_at_once_take_turns(tmp_path, capsys):
  """Two preparations of the same unprepared builder at once (here two threads, each with
  its own lock file descriptor, as two processes have): one prepares, the other waits,
  then finds it prepared; without the lock both would write it."""
  import threading
  import time
  from affectjax.data import prepared

  class Builder:
    name = 'toy'
    data_dir = str(tmp_path / 'toy' / '1.0.0')
    prepares = []

    def is_prepared(self):
      return os.path.isdir(self.data_dir)

    def download_and_prepare(self, download_config):
      assert download_config.manual_dir == 'raw'
      self.prepares.append(threading.get_ident())
      time.sleep(1.0)  # The other thread arrives while this one prepares.
      os.makedirs(self.data_dir)

  checks = []
  threads = [threading.Thread(target=prepared.build_once, args=(Builder(), 'raw'),
                              kwargs={'check': lambda: checks.append(1)}) for _ in range(2)]
  for t in threads:
    t.start()
    time.sleep(0.2)
  for t in threads:
    t.join()
  assert len(Builder.prepares) == 1 and checks == [1]
  assert 'toy is being prepared by another process; waiting' in capsys.readouterr().out
  assert prepared.build_once(Builder(), 'raw') is not None and len(Builder.prepares) == 1
