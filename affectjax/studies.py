"""Helpers shared by the study scripts in experiments/: scoring a finished run's
checkpoints on a split or on another corpus, and the feature-statistics reference rows.

Everything here reads a finished run through the trainer's own setup and eval step, so a
study scores exactly what `affectjax train` would.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from affectjax import checkpoint as checkpoint_lib
from affectjax import metrics, preemption, workdir as workdir_lib
from affectjax import experiment


def _params(exp, workdir: str, kind: str):
  ckpt = checkpoint_lib.Checkpoints(workdir)
  try:
    if kind == 'best':
      return None, ckpt.restore_best(exp.abstract_state.params)
    step, params = ckpt.load_params(kind)
  finally:
    ckpt.close()
  shardings = exp.state_shardings.params
  return step, jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings)


def checkpoint_metrics(config, workdir: str, kind: str = 'latest', split: str = 'test') -> dict:
  """The task's metrics on `split` with the run's `kind` ('latest': the last step, or
  'best') checkpoint; 'step' says which step 'latest' was."""
  dataset, exp = experiment.setup(config)
  eval_step = preemption.compile(exp.lower_eval_step(config.train.eval_batch_size))
  step, params = _params(exp, workdir, kind)
  out = experiment.evaluate(exp, eval_step, params, dataset.splits[split],
                            config.train.eval_batch_size, dataset.splits['train'])
  if step is not None:
    out['step'] = step
  return out


def restricted_scores(logits: np.ndarray, labels: np.ndarray, classes) -> dict:
  """Accuracy and unweighted average recall when only `classes` may be predicted."""
  classes = np.asarray(classes)
  preds = classes[np.argmax(logits[:, classes], axis=1)]
  recalls = [np.mean(preds[labels == c] == c) for c in classes if np.any(labels == c)]
  return {'accuracy': float(np.mean(preds == labels)), 'uar': float(np.mean(recalls))}


def emodb_scores(config, workdir: str, kind: str = 'best') -> dict:
  """A RAVDESS speech classifier's checkpoint on EmoDB's clips of the six shared emotions,
  logits restricted to them (cached in the run folder as emodb[_<kind>].json): accuracy,
  UAR and the number of clips scored."""
  from affectjax.data import ravdess
  path = os.path.join(workdir, 'emodb.json' if kind == 'best' else f'emodb_{kind}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  dataset, exp = experiment.setup(config)
  eval_step = preemption.compile(exp.lower_eval_step(config.train.eval_batch_size))
  _, params = _params(exp, workdir, kind)
  out = experiment.eval_outputs(exp, eval_step, params, ravdess.emodb_source(config),
                                config.train.eval_batch_size)
  scores = {**restricted_scores(out['prediction'], out['label'], ravdess.SHARED_CLASSES),
            'clips': int(len(out['label']))}
  workdir_lib.write_atomic(path, 'the EmoDB scores', lambda f: json.dump(scores, f))
  return scores


def log_mel_statistics(source) -> np.ndarray:
  """Per band: mean, std, 10th and 90th percentile, std of the frame-to-frame delta,
  over each clip's real frames."""
  out = []
  for start in range(0, len(source), 256):  # Log-mel is computed batch by batch.
    batch = source.get_batch(np.arange(start, min(start + 256, len(source))))
    for clip, m in zip(batch['audio'], batch['frame_mask'] > 0):
      f = clip[m]
      d = np.diff(f, axis=0) if len(f) > 1 else np.zeros_like(f)
      out.append(np.concatenate([f.mean(0), f.std(0), np.percentile(f, 10, axis=0),
                                 np.percentile(f, 90, axis=0), d.std(0)]))
  return np.asarray(out, np.float32)


def logistic_reference(train_x, train_y, test_x, test_y, num_classes: int) -> dict:
  """UAR and WAR (accuracy) of `metrics.linear_probe` fitted on the training rows."""
  pred = metrics.linear_probe(train_x, train_y, test_x, num_classes)
  return {'uar': metrics.unweighted_average_recall(test_y, pred, num_classes),
          'accuracy': metrics.accuracy(test_y, pred)}


def mean_std(values, scale: float = 100.0, digits: int = 1) -> str:
  """'mean +- std' (ddof 1) of `values` times `scale`; the mean alone for one value."""
  v = np.asarray(values, np.float64) * scale
  return (f'{v.mean():.{digits}f} +- {v.std(ddof=1):.{digits}f}' if len(v) > 1
          else f'{v.mean():.{digits}f}')


def paired(a, b) -> dict:
  """Paired comparison of per-fold (or per-seed) scores `a` against `b`: the mean
  difference a - b, its 95% confidence interval (Student's t over the n pairs, ddof 1),
  and the exact two-sided sign-test p-value over the pairs that differ (ties dropped).
  A gain is claimed only when the interval excludes 0."""
  from scipy import stats
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = len(d)
  mean = float(d.mean()) if n else float('nan')
  if n > 1:
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
  else:
    half = float('inf')
  wins, losses = int((d > 0).sum()), int((d < 0).sum())
  p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
  return {'n': n, 'mean': mean, 'low': mean - half, 'high': mean + half, 'wins': wins,
          'losses': losses, 'sign_p': p}


def paired_text(a, b, scale: float = 100.0) -> str:
  """'+3.1 [+0.4, +5.8], 6/0, p=0.03' for `paired(a, b)` (points on a 0-100 scale)."""
  r = paired(a, b)
  return (f"{scale * r['mean']:+.1f} [{scale * r['low']:+.1f}, {scale * r['high']:+.1f}], "
          f"{r['wins']}/{r['losses']}, p={r['sign_p']:.2g}")


L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def select_logistic(train_x, train_y, valid_x, valid_y, test_xs, num_classes: int,
                    grid=L2_GRID, score=None) -> dict:
  """A logistic regression (`metrics.linear_probe`) whose L2 is chosen on validation UAR,
  or on `score(labels, predictions)` where given (the first of the best on ties, smaller
  L2 first): {'l2', 'valid_uar' (the validation score), 'logits' (one (N, classes) array
  per entry of `test_xs`), 'predictions' (their classes)}. Test data plays no part in
  the choice."""
  score = score or (lambda y, p: metrics.unweighted_average_recall(y, p, num_classes))
  sizes = np.cumsum([len(valid_x)] + [len(x) for x in test_xs])
  every = np.concatenate([valid_x, *test_xs])
  best = None
  for l2 in grid:  # One fit per L2 scores validation and the test sets alike.
    scores = np.split(metrics.linear_probe(train_x, train_y, every, num_classes, l2,
                                           logits=True), sizes[:-1])
    uar = score(valid_y, scores[0].argmax(1))
    if best is None or uar > best['valid_uar']:
      best = {'l2': l2, 'valid_uar': uar, 'logits': scores[1:],
              'predictions': [s.argmax(1) for s in scores[1:]]}
  return best


def ravdess_fold_facts(config) -> dict:
  """What a RAVDESS speech fold holds, read from the corpus and `config` (for the text
  beside a table, instead of typed counts): actors and labelled clips per split."""
  from affectjax.data import ravdess
  _, _, _, actors, split_actors = ravdess.fold_files(config)
  return {'actors': {k: len(v) for k, v in split_actors.items()},
          'clips': {k: int(np.isin(actors, v).sum()) for k, v in split_actors.items()}}


def context_features(x: np.ndarray, mask: np.ndarray, window: int) -> np.ndarray:
  """(D, T, F) utterance vectors of padded dialogues -> (D, T, 2F): each utterance with the
  mean of the utterances within `window` places of it in its dialogue (itself included,
  padding excluded); window 0 returns `x` unchanged."""
  if not window:
    return x
  m = mask[..., None].astype(x.dtype)
  sums, counts = np.zeros_like(x), np.zeros_like(m)
  t = x.shape[1]
  for shift in range(-window, window + 1):
    lo, hi = max(0, -shift), min(t, t - shift)
    sums[:, lo:hi] += (x * m)[:, lo + shift:hi + shift]
    counts[:, lo:hi] += m[:, lo + shift:hi + shift]
  return np.concatenate([x, sums / np.maximum(counts, 1)], axis=-1)


def dialogue_logistic_floor(splits, num_classes: int, window: int = 0) -> dict:
  """The no-model floor of a conversation corpus: its frozen utterance embeddings
  (`splits[k].arrays`: 'text' (D, T, F), 'label', 'label_mask'), each utterance alone or
  with its +-`window` mean context (`context_features`), into a logistic regression whose
  L2 is chosen on validation weighted F1; test weighted F1 and accuracy, and the L2."""
  rows = {}
  for k in ('train', 'valid', 'test'):
    a = splits[k].arrays
    keep = np.asarray(a['label_mask']) > 0
    rows[k] = (context_features(np.asarray(a['text'], np.float64), keep, window)[keep],
               np.asarray(a['label'])[keep])
  wf1 = lambda y, p: metrics.weighted_f1(y, p, num_classes)  # noqa: E731
  best = select_logistic(*rows['train'], *rows['valid'], [rows['test'][0]], num_classes,
                         score=wf1)
  test_y, pred = rows['test'][1], best['predictions'][0]
  return {'l2': best['l2'], 'weighted_f1': wf1(test_y, pred),
          'accuracy': metrics.accuracy(test_y, pred)}


RIDGE_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 1e4, 1e5)


def ridge_reference(splits, modalities) -> dict:
  """Ridge regression on the concatenated utterance features of `modalities` (standardised
  with the training statistics); its L2 weight is the grid value with the lowest
  validation MAE. The test split's sentiment metrics, and 'l2'."""
  x = {k: np.concatenate([splits[k].arrays[m].reshape(len(splits[k]), -1) for m in modalities],
                         1).astype(np.float64) for k in ('train', 'valid', 'test')}
  y = {k: splits[k].arrays['label'].astype(np.float64).ravel() for k in x}
  mean, std = x['train'].mean(0), x['train'].std(0) + 1e-6
  x = {k: np.c_[(v - mean) / std, np.ones(len(v))] for k, v in x.items()}

  def fit(l2):
    a = x['train'].T @ x['train'] + l2 * np.eye(x['train'].shape[1])
    return np.linalg.solve(a, x['train'].T @ y['train'])
  maes = {l2: float(np.abs(x['valid'] @ fit(l2) - y['valid']).mean()) for l2 in RIDGE_GRID}
  l2 = min(maes, key=maes.get)
  out = metrics.sentiment_metrics(y['test'], x['test'] @ fit(l2))
  out['l2'] = l2
  return out
