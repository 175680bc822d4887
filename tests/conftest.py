"""Tests run on the CPU with 8 virtual devices, so a 4x2 mesh really shards."""

import importlib.util
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import tempfile  # noqa: E402

# One persistent compilation cache for the session, shared with the CLI subprocesses the
# tests start: the same small steps are compiled by many tests (and by every resumed run
# of the kill harness), and a cache hit is the identical executable.
# pytest-xdist's workers (pyproject's addopts) inherit the folder from the controller, so
# the workers share one cache; the test modules' `from conftest import ...` imports this
# file again, hence no folder unless none is set.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='affectjax-test-xla-cache-')
_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR']
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# The ahead-of-time TPU compiles load libtpu without a TPU; by default the first process to
# load it holds /tmp/libtpu_lockfile for life, so a second test worker's compile would abort.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionfinish(session, exitstatus):
  """The session's compilation cache goes with it (one folder per run piled up in /tmp);
  a cache directory given in the environment is the caller's and stays."""
  if _OWN_CACHE:
    import shutil
    shutil.rmtree(_CACHE, ignore_errors=True)


def load_script(*path: str, root: str = 'experiments'):
  """A script under `root` (e.g. 'benchmarks', 'ssm_scan.py'), imported as a module."""
  name = os.path.splitext(path[-1])[0]
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, root, *path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_path(name: str) -> str:
  return os.path.join(REPO, 'configs', name)


def saved_state(path):
  """The tree a checkpoint item directory holds, read with a checkpointer that is closed
  after (one left open is finalised later, after its asyncio loop has closed)."""
  import orbax.checkpoint as ocp  # Imported here: conftest sets JAX's flags first.
  with ocp.StandardCheckpointer() as reader:
    return reader.restore(path)


def train_losses(config, mesh_shape, batch_size: int, num_steps: int):
  """(losses, final state) of `num_steps` real train steps of `config` on a
  (data, model) or (data, fsdp, model) = `mesh_shape` mesh of the first devices: the
  1-device vs 4x2 checks."""
  import numpy as np
  from affectjax import sharding
  from affectjax import experiment
  from affectjax.data import get_dataset, pipeline
  config = config.copy_and_resolve_references()
  shape = tuple(mesh_shape) if len(mesh_shape) == 3 else (mesh_shape[0], 1, mesh_shape[1])
  with config.unlocked():
    config.mesh.data, config.mesh.fsdp, config.mesh.model = shape
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:int(np.prod(shape))])
  dataset = get_dataset(config)
  exp = experiment.Experiment.for_dataset(config, mesh, dataset)
  state = exp.init_state(0)
  step = exp.lower_train_step(batch_size).compile()
  it = pipeline.train_dataset(dataset.splits['train'], batch_size, seed=0, mesh=mesh,
                              rules=exp.rules)
  losses = []
  for _ in range(num_steps):
    state, m = step(state, pipeline.to_global(next(it), mesh, exp.rules))
    losses.append(float(m['loss']))
  return np.array(losses), state


@pytest.fixture
def tiny_overrides():
  """Overrides that shrink a synthetic config to a couple of seconds."""
  return ['train.num_steps=12', 'train.eval_every=6', 'train.log_every=3',
          'train.batch_size=16', 'train.eval_batch_size=32', 'data.num_train=256',
          'data.num_valid=40', 'data.num_test=72']
