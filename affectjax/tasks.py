"""What differs per problem, as one protocol the trainer asks.

A task declares the RNG streams its model draws from, whether it needs labels and which
scalar metrics it reports; it computes the training loss over the global batch (so
cross-example losses such as contrastive ones see every row), the per-example outputs an
evaluation keeps, and the metrics over a whole split from those outputs. Tasks are looked
up by `config.task.name`: the `name` of a `Task` subclass in this module or in a module
(`classification`, `regression`, `contrastive`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from affectjax import losses
from affectjax import metrics as metrics_lib
from affectjax import sharding as sharding_lib
from affectjax.errors import ConfigError


class Task:
  """The protocol. Subclasses set the class attributes and implement the methods."""
  name: ClassVar[str] = ''
  rng_streams: ClassVar[tuple[str, ...]] = ('dropout',)
  # Streams the model also draws from in evaluation (e.g. `masking`): fixed keys there,
  # the same for every evaluation of a run, so checkpoints are compared on equal inputs.
  eval_rng_streams: ClassVar[tuple[str, ...]] = ()
  needs_labels: ClassVar[bool] = True
  # Train-split outputs passed to `metrics(..., reference=)` (k-NN, linear probes).
  wants_reference: ClassVar[bool] = False

  @property
  def out_dim(self) -> int:
    """Width of the model's output head (0: the model has none)."""
    return 0

  def metric_names(self) -> tuple[str, ...]:
    """The scalar metrics `metrics` returns."""
    raise NotImplementedError

  def headline(self) -> tuple[str, ...]:
    """The metrics sweeps and tables report, in order."""
    return self.metric_names()

  def loss(self, outputs, batch: dict, *, mesh=None, rules=()) -> tuple[jax.Array, dict]:
    """(scalar loss over the global batch, aux scalars to log)."""
    raise NotImplementedError

  def eval_outputs(self, outputs, batch: dict) -> dict[str, jax.Array]:
    """Per-example arrays to keep, plus `valid` (1 for real examples, 0 for padding)
    with the leading axes every other array shares."""
    raise NotImplementedError

  def metrics(self, gathered: dict[str, np.ndarray], reference=None) -> dict:
    """Metrics over a whole split from its concatenated, unpadded `eval_outputs`."""
    raise NotImplementedError

  def report(self, results: dict, workdir: str, title: str, run=None) -> None:
    """Figures of a finished run (written by the lead process); default none. `run`:
    (config, outputs_of(batch) -> the model's evaluation outputs with the selected
    parameters, the test split), for figures that need the model."""


def weights(batch: dict) -> jax.Array:
  """Per-label weights: `mask` marks real examples (not batch padding); for padded
  sequences of labelled utterances `label_mask` marks real utterances."""
  mask = batch['mask']
  if 'label_mask' in batch:
    return mask[:, None] * batch['label_mask']
  return mask


@dataclasses.dataclass(frozen=True)
class Supervised(Task):
  """A labelled problem: per-example loss, weighted mean over real labels."""
  num_classes: int | None
  loss_name: str
  metrics_name: str
  class_names: tuple[str, ...] | None = None  # Keys of per-class metrics; default indices.
  # What `config.task.loss` and `config.task.metrics` may name for this task.
  LOSSES: ClassVar[tuple[str, ...]] = ()
  METRICS: ClassVar[tuple[str, ...]] = ()
  HAS_CLASSES: ClassVar[bool] = False

  @classmethod
  def from_config(cls, config, num_classes=None, class_names=None) -> 'Supervised':
    c = config.task
    loss, metrics = c.get('loss', ''), c.get('metrics', '')
    if loss not in cls.LOSSES:
      raise ConfigError(f'config.task.loss: {loss!r} does not fit task {cls.name!r} '
                        f'({" | ".join(cls.LOSSES)})')
    if metrics not in cls.METRICS:
      raise ConfigError(f'config.task.metrics: {metrics!r} does not fit task {cls.name!r} '
                        f'({" | ".join(cls.METRICS)})')
    classes = c.num_classes if cls.HAS_CLASSES else None
    if classes is not None and num_classes is not None and classes != num_classes:
      raise ConfigError(f'config.task.num_classes={classes} but the dataset has '
                        f'{num_classes} classes')
    return cls(classes, loss, metrics, tuple(class_names) if class_names else None)

  def per_example_loss(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    raise NotImplementedError

  def predictions(self, outputs: jax.Array) -> jax.Array:
    raise NotImplementedError

  def loss(self, outputs, batch, *, mesh=None, rules=()):
    """Weighted mean loss; padding (weight 0) contributes nothing."""
    w = weights(batch)
    per = self.per_example_loss(outputs, batch['label'])
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0), {}

  def eval_outputs(self, outputs, batch):
    return {'prediction': self.predictions(outputs),
            'loss': self.per_example_loss(outputs, batch['label']),
            'label': batch['label'], 'valid': weights(batch)}

  def metrics(self, gathered, reference=None) -> dict:
    out = self.label_metrics(gathered['label'], gathered['prediction'])
    out['loss'] = float(gathered['loss'].mean())
    return out


@dataclasses.dataclass(frozen=True)
class Classification(Supervised):
  """`num_classes` logits, softmax cross-entropy."""
  name: ClassVar[str] = 'classification'
  LOSSES: ClassVar[tuple[str, ...]] = ('cross_entropy',)
  METRICS: ClassVar[tuple[str, ...]] = ('classification',)
  HAS_CLASSES: ClassVar[bool] = True

  @property
  def out_dim(self) -> int:
    return self.num_classes

  def per_example_loss(self, outputs, labels):
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), labels)

  def predictions(self, outputs):
    return outputs.astype(jnp.float32)

  def metric_names(self):
    return ('accuracy', 'loss', 'macro_f1', 'uar', 'weighted_f1')

  def headline(self):
    return ('accuracy', 'weighted_f1', 'macro_f1')

  def label_metrics(self, labels, preds) -> dict:
    return metrics_lib.classification_metrics(labels, preds, self.num_classes,
                                              self.class_names)

  def report(self, results, workdir, title, run=None):
    test = results.get('test', {})
    if 'confusion' in test:
      from affectjax import plots
      plots.confusion_matrix_png(test['confusion'], self.class_names,
                                 os.path.join(workdir, 'confusion_test.png'), f'{title}: test')


@dataclasses.dataclass(frozen=True)
class Regression(Supervised):
  """One score; L1 or squared error. Metrics `regression` (MAE, MSE, correlation) or
  `sentiment`: the CMU-MOSI/MOSEI protocol on the same score (binary accuracy and F1 with
  and without neutral, 5- and 7-class accuracy, MAE, correlation)."""
  name: ClassVar[str] = 'regression'
  LOSSES: ClassVar[tuple[str, ...]] = ('l1', 'mse')
  METRICS: ClassVar[tuple[str, ...]] = ('regression', 'sentiment')

  @property
  def out_dim(self) -> int:
    return 1

  def per_example_loss(self, outputs, labels):
    pred = outputs.astype(jnp.float32)[..., 0]
    if self.loss_name == 'l1':
      return jnp.abs(pred - labels)
    return jnp.square(pred - labels)

  def predictions(self, outputs):
    return outputs.astype(jnp.float32)[..., 0]

  def metric_names(self):
    if self.metrics_name == 'sentiment':
      return ('acc2', 'acc2_has0', 'acc5', 'acc7', 'corr', 'f1', 'f1_has0', 'loss', 'mae')
    return ('corr', 'loss', 'mae', 'mse')

  def headline(self):
    if self.metrics_name == 'sentiment':
      return ('acc2', 'f1', 'acc2_has0', 'acc7', 'mae', 'corr')
    return ('mae', 'mse', 'corr')

  def label_metrics(self, labels, preds) -> dict:
    if self.metrics_name == 'sentiment':
      return metrics_lib.sentiment_metrics(labels, preds)
    return metrics_lib.regression_metrics(labels, preds)


@dataclasses.dataclass(frozen=True)
class Contrastive(Task):
  """Contrastive pretraining between every pair of modalities, without labels.

  The model returns {'embeddings': {modality: (B, D) normalised}, 'scale', 'bias',
  'features': {modality: (B, W)}} (`models/contrastive.py`). Loss: symmetric InfoNCE or
  the sigmoid loss (`config.task.loss`), negatives from the whole global batch; with
  `config.task.lean` the shard_map form (local x global logits per device). With
  `config.task.supcon_weight` > 0 the task needs labels and adds that weight times the
  supervised contrastive loss (Khosla et al. 2020) over every modality's embedding of
  every example as views of its label (`supcon_temperature`, 0.1 as in the paper).

  Evaluation over a whole split: cross-modal retrieval in both directions of every pair
  (R@1, R@5, R@10, median rank; `mean_r1` averages R@1 over them, a label-free selection
  metric) and the loss over the split. When the dataset has labels, also k-NN accuracy
  (cosine, `knn_k` neighbours from the train split) and a linear probe (multinomial
  logistic regression fitted on the train split's frozen tower features) per modality.
  """
  name: ClassVar[str] = 'contrastive'
  wants_reference: ClassVar[bool] = True
  modalities: tuple[str, ...] = ()
  loss_name: str = 'infonce'
  lean: bool = True
  num_classes: int | None = None
  knn_k: int = 20
  probe_l2: float = 1e-2
  supcon_weight: float = 0.0
  supcon_temperature: float = 0.1

  @property
  def needs_labels(self) -> bool:
    return self.supcon_weight > 0

  @classmethod
  def from_config(cls, config, num_classes=None, class_names=None) -> 'Contrastive':
    c = config.task
    if c.get('loss') not in ('infonce', 'sigmoid'):
      raise ConfigError(f'config.task.loss: {c.get("loss")!r} does not fit task '
                        "'contrastive' (infonce | sigmoid)")
    mods = tuple(config.data.modalities)
    if len(mods) < 2:
      raise ConfigError(f'config.data.modalities: contrastive pretraining needs two or more '
                        f'modalities, got {mods}')
    weight, tau = float(c.get('supcon_weight', 0.0)), float(c.get('supcon_temperature', 0.1))
    if weight < 0 or tau <= 0:
      raise ConfigError(f'config.task: supcon_weight={weight} must be >= 0 and '
                        f'supcon_temperature={tau} > 0')
    return cls(mods, c.loss, bool(c.get('lean', True)), num_classes,
               int(c.get('knn_k', 20)), float(c.get('probe_l2', 1e-2)), weight, tau)

  def _directions(self):
    return [(a, b) for a, b in losses.pairs(self.modalities)] + [
        (b, a) for a, b in losses.pairs(self.modalities)]

  def metric_names(self):
    names = ['loss', 'mean_r1']
    for a, b in self._directions():
      names += [f'{a}_to_{b}/{k}' for k in ('r1', 'r5', 'r10', 'median_rank')]
    if self.num_classes:
      for m in self.modalities:
        names += [f'knn_{m}/accuracy', f'probe_{m}/accuracy', f'probe_{m}/uar']
    return tuple(names)

  def headline(self):
    a, b = losses.pairs(self.modalities)[0]
    out = ('mean_r1', f'{a}_to_{b}/r1', f'{a}_to_{b}/r5', f'{b}_to_{a}/r1', f'{b}_to_{a}/r5')
    if self.num_classes:
      out += tuple(f'probe_{m}/uar' for m in self.modalities)
    return out

  def loss(self, outputs, batch, *, mesh=None, rules=()):
    axes = None
    if self.lean and mesh is not None:
      axes = sharding_lib.logical_sharding(mesh, rules, ('batch',)).spec[0]
      if axes is None:
        mesh = None  # The batch is not split: the global form is the local one.
    total, per = losses.multimodal_loss(outputs['embeddings'], batch['mask'], self.loss_name,
                                        outputs['scale'], outputs['bias'],
                                        mesh=mesh if axes is not None else None, axes=axes)
    aux = dict(per, scale=outputs['scale'])
    if self.loss_name == 'sigmoid':
      aux['bias'] = outputs['bias']
    if self.supcon_weight:
      # Example b's modalities are rows b * M .. b * M + M - 1: each device keeps its own.
      emb = outputs['embeddings']
      views = jnp.stack([emb[m] for m in self.modalities], axis=1)
      m = len(self.modalities)
      x = views.reshape(-1, views.shape[-1])
      labels = jnp.repeat(batch['label'].astype(jnp.int32), m)
      mask = jnp.repeat(batch['mask'], m)
      fn = (losses.supervised_contrastive_loss if axes is None or mesh is None else
            losses.sharded(losses.supervised_contrastive_loss, mesh, axes))
      aux['loss/supcon'] = fn(x, labels, self.supcon_temperature, mask)
      total = total + self.supcon_weight * aux['loss/supcon']
    return total, aux

  def eval_outputs(self, outputs, batch):
    mask = batch['mask']
    out = {'valid': mask,
           'scale': jnp.broadcast_to(outputs['scale'], mask.shape),
           'bias': jnp.broadcast_to(outputs['bias'], mask.shape)}
    for m in self.modalities:
      out[f'embedding/{m}'] = outputs['embeddings'][m]
      out[f'feature/{m}'] = outputs['features'][m].astype(jnp.float32)
    if 'label' in batch:
      out['label'] = batch['label']
    return out

  def metrics(self, gathered, reference=None) -> dict:
    emb = {m: gathered[f'embedding/{m}'] for m in self.modalities}
    scale, bias = float(gathered['scale'][0]), float(gathered['bias'][0])
    out = {}
    pair_losses = []
    for a, b in losses.pairs(self.modalities):  # The training loss, over the whole split.
      x, y = jnp.asarray(emb[a], jnp.float32), jnp.asarray(emb[b], jnp.float32)
      pair_losses.append(float(losses.clip_loss(x, y, scale) if self.loss_name == 'infonce'
                               else losses.sigmoid_loss(x, y, scale, bias)))
    out['loss'] = float(np.mean(pair_losses))
    r1 = []
    for a, b in self._directions():
      r = metrics_lib.retrieval_metrics(emb[a], emb[b])
      out.update({f'{a}_to_{b}/{k}': v for k, v in r.items()})
      r1.append(r['r1'])
    out['mean_r1'] = float(np.mean(r1))
    if self.num_classes and 'label' in gathered and reference is not None and (
        'label' in reference):
      for m in self.modalities:
        x, rx = gathered[f'feature/{m}'], reference[f'feature/{m}']
        out[f'knn_{m}/accuracy'] = metrics_lib.knn_accuracy(
            rx, reference['label'], x, gathered['label'], self.knn_k, self.num_classes)
        pred = metrics_lib.linear_probe(rx, reference['label'], x, self.num_classes,
                                        self.probe_l2)
        out[f'probe_{m}/accuracy'] = metrics_lib.accuracy(gathered['label'], pred)
        out[f'probe_{m}/uar'] = metrics_lib.unweighted_average_recall(
            gathered['label'], pred, self.num_classes)
    return out


@dataclasses.dataclass(frozen=True)
class MaskedReconstruction(Task):
  """Masked-autoencoder pretraining, without labels.

  The model returns {'prediction', 'target': (B, N, P), 'masked': (B, N)} (1 on hidden
  tokens of real input), or for several modalities {'reconstruction': {modality: that},
  'levels': {modality: (L, B, D)}} (`models/mae.py`). Loss: per modality, the mean
  squared error per patch averaged over the hidden patches of the real examples in the
  global batch, summed over modalities (HiCMAE weighs audio and video equally); plus,
  with `config.task.contrastive_weight` > 0, that weight times HiCMAE's hierarchical
  cross-modal contrastive loss: symmetric InfoNCE (`losses.clip_loss`, fixed
  `temperature`, 0.07 and weight 0.1 in the paper) between the two modalities' pooled
  embeddings at each intermediate level, summed over levels, negatives from the whole
  global batch. Evaluation: the reconstruction error over a whole split (`loss`, the
  selection metric; `loss_<modality>` each), with fixed masks (`eval_rng_streams`).
  """
  name: ClassVar[str] = 'masked_reconstruction'
  rng_streams: ClassVar[tuple[str, ...]] = ('dropout', 'masking')
  eval_rng_streams: ClassVar[tuple[str, ...]] = ('masking',)
  needs_labels: ClassVar[bool] = False
  modalities: tuple[str, ...] = ()
  contrastive_weight: float = 0.0
  temperature: float = 0.07

  @classmethod
  def from_config(cls, config, num_classes=None, class_names=None) -> 'MaskedReconstruction':
    c = config.task
    loss = c.get('loss', 'mse')
    if loss != 'mse':
      raise ConfigError(f'config.task.loss: {loss!r} does not fit task '
                        "'masked_reconstruction' (mse)")
    weight, tau = float(c.get('contrastive_weight', 0.0)), float(c.get('temperature', 0.07))
    if weight < 0 or tau <= 0:
      raise ConfigError(f'config.task: contrastive_weight={weight} must be >= 0 and '
                        f'temperature={tau} > 0')
    return cls(tuple(config.data.modalities), weight, tau)

  def metric_names(self):
    if len(self.modalities) > 1:
      return ('loss',) + tuple(f'loss_{m}' for m in self.modalities)
    return ('loss',)

  @staticmethod
  def _reconstructions(outputs) -> dict:
    return outputs['reconstruction'] if 'reconstruction' in outputs else {'': outputs}

  @staticmethod
  def _per_example(rec, batch):
    err = jnp.mean(jnp.square(rec['prediction'] - rec['target']), axis=-1)
    hidden = rec['masked'] * batch['mask'][:, None]
    return jnp.sum(err * hidden, axis=1), jnp.sum(hidden, axis=1)

  def loss(self, outputs, batch, *, mesh=None, rules=()):
    total, aux = 0.0, {}
    examples = jnp.maximum(jnp.sum(batch['mask']), 1.0)
    for m, rec in self._reconstructions(outputs).items():
      err, count = self._per_example(rec, batch)
      part = jnp.sum(err) / jnp.maximum(jnp.sum(count), 1.0)
      total = total + part
      suffix = f'_{m}' if m else ''
      aux[f'hidden_patches{suffix}'] = jnp.sum(count) / examples
      if m:
        aux[f'reconstruction_{m}'] = part
    levels = outputs.get('levels') if isinstance(outputs, dict) else None
    if self.contrastive_weight and levels:
      a, b = (levels[m] for m in self.modalities)
      scale = jnp.asarray(1.0 / self.temperature, jnp.float32)
      contrast = sum(losses.clip_loss(a[i], b[i], scale, batch['mask'])
                     for i in range(a.shape[0]))
      aux['contrastive'] = contrast
      total = total + self.contrastive_weight * contrast
    return total, aux

  def eval_outputs(self, outputs, batch):
    out = {'valid': batch['mask']}
    for m, rec in self._reconstructions(outputs).items():
      suffix = f'_{m}' if m else ''
      out[f'error_sum{suffix}'], out[f'hidden{suffix}'] = self._per_example(rec, batch)
    return out

  def report(self, results, workdir, title, run=None):
    """reconstruction.png: a log-mel MAE's hidden patches predicted, for up to 4 test clips
    spread over the split, with the evaluation's fixed masks and the selected checkpoint
    (the audio-visual MAE's per-modality reconstructions are drawn by no figure yet)."""
    if run is None:
      return
    config, outputs_of, test = run
    if 'patch' not in config.model or not len(test) or 'audio' not in test.element_spec():
      return
    idx = np.unique(np.linspace(0, len(test) - 1, min(4, len(test))).astype(int))
    batch = dict(test.get_batch(idx))
    batch['mask'] = np.ones(len(idx), np.float32)
    out = outputs_of(batch)
    if not isinstance(out, dict) or 'prediction' not in out or np.ndim(batch['audio']) != 3:
      return
    from affectjax import plots
    patch = tuple(config.model.patch)
    x = np.asarray(batch['audio'])
    x = x[:, :x.shape[1] // patch[0] * patch[0], :x.shape[2] // patch[1] * patch[1]]
    plots.reconstruction_png(
        x, out['masked'], out['prediction'], patch, batch['frame_mask'],
        os.path.join(workdir, 'reconstruction.png'),
        f'{title}: {config.model.mask_ratio:.0%} of {patch[0]} x {patch[1]} patches hidden, '
        'selected checkpoint', norm_targets=bool(config.model.get('norm_targets', False)),
        row_names=[f'test clip {i}' for i in idx])

  def metrics(self, gathered, reference=None) -> dict:
    out, total = {}, 0.0
    for key in sorted(gathered):
      if key.startswith('error_sum'):
        suffix = key[len('error_sum'):]
        value = float(np.sum(gathered[key]) /
                      max(float(np.sum(gathered[f'hidden{suffix}'])), 1.0))
        total += value
        if suffix:
          out[f'loss{suffix}'] = value
    out['loss'] = total
    return out


def _task_classes() -> dict[str, type]:
  found, todo = {}, [Task]
  while todo:
    cls = todo.pop()
    todo.extend(cls.__subclasses__())
    if cls.__dict__.get('name'):
      found[cls.name] = cls
  return found


def get_task(config, num_classes: int | None = None, class_names=None) -> Task:
  """The task named by `config.task.name`, built from `config.task`'s fields.

  `num_classes`, `class_names`: the dataset's metadata (checked against the config)."""
  c = config.task
  classes = _task_classes()
  if c.name not in classes:
    raise ConfigError(f'config.task.name: unknown {c.name!r} ({" | ".join(sorted(classes))})')
  cls = classes[c.name]
  return cls.from_config(config, num_classes=num_classes, class_names=class_names)

