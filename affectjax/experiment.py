"""What a run is, apart from its loop: the model, task, optimizer and shardings of a config
on its mesh (`Experiment`), the checks made before anything trains (`validate`, `setup`),
evaluation of a split, and a finished run read back (`load_trained`). The loop itself is
affectjax/train.py; predict, studies and compiles build on this module.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import data as data_lib
from affectjax import errors
from affectjax import faults
from affectjax import models
from affectjax import optim
from affectjax import preemption
from affectjax import sharding as sharding_lib
from affectjax import tasks
from affectjax import transfer
from affectjax.data import pipeline


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32[2] key; each step folds in the step number.


class Experiment:
  """Model, task, optimizer and the jitted steps of one config on one mesh.

  Nothing here touches data: the element spec (per-example shapes) is enough,
  which is what lets `affectjax compile` lower the real train step for a TPU
  topology on a CPU-only machine.
  """

  def __init__(self, config, mesh, element_spec: dict, modalities, num_classes=None,
               class_names=None, model_inputs=None):
    self.config = config
    self.mesh = mesh
    self.rules = sharding_lib.axis_rules(config)
    self.task = tasks.get_task(config, num_classes, class_names)
    self.element_spec = dict(element_spec)
    if self.task.needs_labels and 'label' not in self.element_spec:
      raise errors.DataError(f'config.task.name={config.task.name!r} needs labels, but the '
                             'dataset has none')
    self.model = models.get_model(config.model, modalities, self.task.out_dim, model_inputs)
    with self._context():
      abstract_params = jax.eval_shape(self._init_params, jax.ShapeDtypeStruct((2,), jnp.uint32))
    self.tx = optim.make_optimizer(config, nn.meta.unbox(abstract_params))
    with self._context():
      boxed = jax.eval_shape(self._init_boxed, jax.ShapeDtypeStruct((2,), jnp.uint32))
    self.state_shardings = sharding_lib.tree_shardings(mesh, self.rules, boxed)
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nn.meta.unbox(boxed), self.state_shardings)
    self.num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(
        self.abstract_state.params)))

  @classmethod
  def for_dataset(cls, config, mesh, dataset) -> 'Experiment':
    """The experiment of `config` on `dataset`'s shapes, classes and model inputs."""
    return cls(config, mesh, dataset.element_spec(), dataset.modalities, dataset.num_classes,
               dataset.class_names, dataset.model_inputs)

  def _context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def _dummy_batch(self):
    batch = {k: jnp.zeros((1, *shape), dtype) for k, (shape, dtype) in self.element_spec.items()}
    batch['mask'] = jnp.ones((1,), jnp.float32)
    return batch

  def _rngs(self, key) -> dict:
    """One key per RNG stream the task declares: the first stream gets `key` itself (so
    a dropout-only task draws what it always drew), the others keys folded from it."""
    return {name: key if i == 0 else jax.random.fold_in(key, i)
            for i, name in enumerate(self.task.rng_streams)}

  def _init_params(self, rng):
    params_rng, stream_rng, _ = jax.random.split(rng, 3)
    return self.model.init({'params': params_rng, **self._rngs(stream_rng)},
                           self._dummy_batch(), train=False)['params']

  def _init_boxed(self, rng):
    params = self._init_params(rng)
    _, _, state_rng = jax.random.split(rng, 3)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), rng=state_rng)

  # -- steps -------------------------------------------------------------

  def _train_step(self, state: TrainState, batch):
    step_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      outputs = self.model.apply({'params': params}, batch, train=True,
                                 rngs=self._rngs(step_rng))
      return self.task.loss(outputs, batch, mesh=self.mesh, rules=self.rules)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), 'aux': aux}

  def eval_rngs(self) -> dict:
    """Fixed keys for the streams a model draws from in evaluation too (e.g. masking)."""
    return {name: jax.random.fold_in(jax.random.PRNGKey(0), i)
            for i, name in enumerate(self.task.eval_rng_streams)}

  def apply_eval(self, params, batch) -> dict:
    """The model's evaluation outputs on one host batch (NumPy arrays), with the fixed
    evaluation keys: for figures and inspection, not for metrics (`evaluate`)."""
    with self._context():
      out = jax.jit(lambda p, b: self.model.apply({'params': p}, b, train=False,
                                                 rngs=self.eval_rngs()))(params, batch)
    return jax.tree.map(np.asarray, out)

  def _eval_step(self, params, batch):
    outputs = self.model.apply({'params': params}, batch, train=False, rngs=self.eval_rngs())
    return self.task.eval_outputs(outputs, batch)

  def batch_spec(self, batch_size: int) -> dict:
    return pipeline.batch_spec(self.element_spec, batch_size, self.mesh, self.rules)

  def _batch_shardings(self, batch_size: int):
    return jax.tree.map(lambda s: s.sharding, self.batch_spec(batch_size))

  def init_state(self, seed: int) -> TrainState:
    """A fresh state: random initialisation, then the sources of `config.init` (another
    run's checkpoint, Hugging Face folders) over it, with the same shardings. The
    optimizer state stays as initialised: the optimizers here (adam, adamw, sgd with
    momentum) start from zero moments whatever the parameter values."""
    state = preemption.compile(self.lower_init())(jax.random.PRNGKey(seed))
    return state.replace(params=transfer.apply(self.config, state.params))

  def lower_init(self):
    with self._context():
      init = jax.jit(lambda rng: nn.meta.unbox(self._init_boxed(rng)),
                     out_shardings=self.state_shardings)
      return init.lower(jax.ShapeDtypeStruct((2,), jnp.uint32))

  def lower_train_step(self, batch_size: int):
    replicated = sharding_lib.replicated(self.mesh)
    with self._context():
      step = jax.jit(self._train_step,
                     in_shardings=(self.state_shardings, self._batch_shardings(batch_size)),
                     out_shardings=(self.state_shardings, replicated),
                     donate_argnums=(0,))
      return step.lower(self.abstract_state, self.batch_spec(batch_size))

  def lower_eval_step(self, batch_size: int):
    """The eval step; each output keeps the batch sharding of its leading axis (derived
    from the step's own output shapes)."""
    spec = self.batch_spec(batch_size)
    with self._context():
      shapes = jax.eval_shape(self._eval_step, self.abstract_state.params, spec)
      out = jax.tree.map(
          lambda x: sharding_lib.batch_sharding(self.mesh, self.rules, x.ndim)
          if x.ndim else sharding_lib.replicated(self.mesh), shapes)
      step = jax.jit(self._eval_step,
                     in_shardings=(self.state_shardings.params,
                                   self._batch_shardings(batch_size)),
                     out_shardings=out)
      return step.lower(self.abstract_state.params, spec)


def _gather(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def eval_outputs(exp: Experiment, eval_step, params, source, batch_size: int) -> dict:
  """The task's per-example eval outputs over one split, in order, padding removed."""
  parts = {}
  for local in pipeline.eval_batches(source, batch_size, exp.mesh, exp.rules):
    batch = pipeline.to_global(local, exp.mesh, exp.rules)
    out = {k: _gather(v) for k, v in eval_step(params, batch).items()}
    valid = out.pop('valid') > 0
    for k, v in out.items():
      parts.setdefault(k, []).append(v[valid])
    faults.point('evaluating')
  return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate(exp: Experiment, eval_step, params, source, batch_size: int,
             reference=None) -> dict:
  """The task's metrics over one split. `reference`: the train split's source, for tasks
  that score a split against it (k-NN, linear probes on frozen embeddings)."""
  ref = None
  if exp.task.wants_reference and reference is not None:
    ref = eval_outputs(exp, eval_step, params, reference, batch_size)
  return exp.task.metrics(eval_outputs(exp, eval_step, params, source, batch_size), ref)


def validate(config) -> None:
  config_lib.validate(config)
  optim.check_groups(config.optim.get('groups', ()))
  transfer.check(config)


def setup(config) -> tuple[data_lib.Dataset, Experiment]:
  """The dataset and the Experiment of `config` on its mesh, with the batch sizes and the
  selection metric checked against them: what training, evaluation and the study scripts
  start from (public: studies call it, not the trainer's internals)."""
  dataset = data_lib.get_dataset(config)
  for split in ('train', *eval_splits(config)):
    if split not in dataset.splits or not len(dataset.splits[split]):
      raise errors.DataError(f'{dataset.where}: split {split!r} is empty')
  mesh = sharding_lib.make_mesh(config.mesh)
  exp = Experiment.for_dataset(config, mesh, dataset)
  t = config.train
  split = sharding_lib.batch_devices(mesh, exp.rules)
  for name, bs in (('batch_size', t.batch_size), ('eval_batch_size', t.eval_batch_size)):
    if bs % split:
      raise config_lib.ConfigError(
          f'config.train.{name}={bs} is not divisible by the batch\'s mesh axes '
          f'({" x ".join(sharding_lib.batch_axes(exp.rules))}: {split} devices)')
  names = sorted(exp.task.metric_names())
  if t.select_metric not in names:
    raise config_lib.ConfigError(f'config.train.select_metric: {t.select_metric!r} is not a '
                                 f'validation metric of this task (have {", ".join(names)})')
  return dataset, exp


def eval_splits(config) -> tuple[str, ...]:
  return tuple(config.train.get('eval_splits', ('valid', 'test')))


def load_trained(config, workdir: str):
  """(experiment, compiled eval step, best params, dataset) of a finished run."""
  if not os.path.exists(os.path.join(workdir, 'results.json')):
    raise FileNotFoundError(f'{workdir}/results.json: no finished run here; train it first '
                            '(affectjax train with the same config and workdir)')
  config_lib.check_workdir(config, workdir)
  dataset, exp = setup(config)
  eval_step = preemption.compile(exp.lower_eval_step(config.train.eval_batch_size))
  ckpt = checkpoint_lib.Checkpoints(workdir, config.train.keep_checkpoints)
  params = ckpt.restore_best(exp.abstract_state.params)
  ckpt.close()
  return exp, eval_step, params, dataset

