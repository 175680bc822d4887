"""Evaluation metrics with their published definitions (pure NumPy functions).

Sentiment regression follows the CMU-MOSI / MOSEI convention used by TFN, LMF,
MulT and the MMSA toolkit:

* Acc-2 "non-0" (a.k.a. negative/positive): samples whose true label is exactly 0
  are removed; a prediction is positive when > 0.
* Acc-2 "has-0" (negative/non-negative): all samples; positive means >= 0.
* F1 for either Acc-2 is the support-weighted F1 over the two classes.
* Acc-7 / Acc-5: predictions and labels clipped to [-3, 3] / [-2, 2] and rounded
  to the nearest integer (round half to even, as `np.round`).
* MAE and Pearson correlation on the raw scores.

Classification: accuracy, support-weighted F1 (the ERC headline number), macro F1
over the classes present in labels or predictions (scikit-learn's default),
per-class F1 and the confusion matrix (rows true, columns predicted).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
  """Counts[i, j] = number of examples with true class i predicted as j."""
  labels = np.asarray(labels, np.int64).ravel()
  preds = np.asarray(preds, np.int64).ravel()
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, preds), 1)
  return cm


def _f1_from_confusion(cm: np.ndarray) -> np.ndarray:
  tp = np.diag(cm).astype(np.float64)
  predicted = cm.sum(axis=0).astype(np.float64)
  actual = cm.sum(axis=1).astype(np.float64)
  denom = predicted + actual
  # F1 = 2 tp / (predicted + actual); 0 when the class never appears (sklearn's zero_division=0).
  return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def per_class_f1(labels, preds, num_classes: int) -> np.ndarray:
  return _f1_from_confusion(confusion_matrix(labels, preds, num_classes))


def weighted_f1(labels, preds, num_classes: int) -> float:
  """F1 per class averaged with weights equal to each class's true support."""
  cm = confusion_matrix(labels, preds, num_classes)
  support = cm.sum(axis=1).astype(np.float64)
  if support.sum() == 0:
    return 0.0
  return float((_f1_from_confusion(cm) * support).sum() / support.sum())


def macro_f1(labels, preds, num_classes: int) -> float:
  """Unweighted mean F1 over classes that occur in the labels or the predictions."""
  cm = confusion_matrix(labels, preds, num_classes)
  present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
  if not present.any():
    return 0.0
  return float(_f1_from_confusion(cm)[present].mean())


def accuracy(labels, preds) -> float:
  labels = np.asarray(labels).ravel()
  preds = np.asarray(preds).ravel()
  return float((labels == preds).mean()) if labels.size else 0.0


def unweighted_average_recall(labels, preds, num_classes: int) -> float:
  """UAR: recall per class, averaged over the classes present in `labels` (the speech
  emotion literature's UAR; scikit-learn's balanced accuracy). WAR is `accuracy`."""
  cm = confusion_matrix(labels, preds, num_classes)
  support = cm.sum(axis=1)
  present = support > 0
  if not present.any():
    return 0.0
  return float((np.diag(cm)[present] / support[present]).mean())


def classification_metrics(labels, logits_or_preds, num_classes: int,
                           class_names: Sequence[str] | None = None) -> dict:
  """Accuracy (WAR), UAR, weighted/macro F1, per-class F1 and the confusion matrix.

  Args:
    labels: (N,) integer classes.
    logits_or_preds: (N, C) scores (argmax is taken) or (N,) predicted classes.
    num_classes: C.
    class_names: names used as keys of `per_class_f1`; defaults to indices.

  Returns:
    A dict of floats plus `per_class_f1` (dict) and `confusion` (list of lists).

  >>> classification_metrics([0, 1, 1], [0, 1, 0], 2)['accuracy']
  0.6666666666666666
  """
  preds = np.asarray(logits_or_preds)
  if preds.ndim == 2:
    preds = preds.argmax(-1)
  labels = np.asarray(labels, np.int64).ravel()
  cm = confusion_matrix(labels, preds, num_classes)
  names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
  return {
      'accuracy': accuracy(labels, preds),
      'weighted_f1': weighted_f1(labels, preds, num_classes),
      'macro_f1': macro_f1(labels, preds, num_classes),
      'uar': unweighted_average_recall(labels, preds, num_classes),
      'per_class_f1': dict(zip(names, map(float, _f1_from_confusion(cm)))),
      'confusion': cm.tolist(),
  }


def pearson(x, y) -> float:
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  xc, yc = x - x.mean(), y - y.mean()
  denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
  return float((xc * yc).sum() / denom) if denom > 0 else 0.0


def regression_metrics(labels, preds) -> dict:
  """MAE, MSE and Pearson correlation."""
  labels = np.asarray(labels, np.float64).ravel()
  preds = np.asarray(preds, np.float64).ravel()
  return {
      'mae': float(np.abs(preds - labels).mean()),
      'mse': float(((preds - labels) ** 2).mean()),
      'corr': pearson(preds, labels),
  }


def _binary(labels_bool, preds_bool) -> tuple[float, float]:
  labels_i = labels_bool.astype(np.int64)
  preds_i = preds_bool.astype(np.int64)
  return accuracy(labels_i, preds_i), weighted_f1(labels_i, preds_i, 2)


def sentiment_metrics(labels, preds) -> dict:
  """The MOSI/MOSEI regression metrics (see the module docstring for definitions).

  Args:
    labels: (N,) true sentiment in [-3, 3].
    preds: (N,) predicted sentiment.

  Returns:
    acc2 / f1 (non-0), acc2_has0 / f1_has0, acc5, acc7, mae, corr (and mse).

  >>> m = sentiment_metrics([-1.0, 0.0, 2.0], [-0.5, 0.4, 1.0])
  >>> m['acc2'], m['acc2_has0']
  (1.0, 1.0)
  """
  labels = np.asarray(labels, np.float64).ravel()
  preds = np.asarray(preds, np.float64).ravel()
  out = regression_metrics(labels, preds)
  non0 = labels != 0
  out['acc2'], out['f1'] = _binary(labels[non0] > 0, preds[non0] > 0)
  out['acc2_has0'], out['f1_has0'] = _binary(labels >= 0, preds >= 0)
  out['acc7'] = accuracy(np.round(np.clip(labels, -3, 3)), np.round(np.clip(preds, -3, 3)))
  out['acc5'] = accuracy(np.round(np.clip(labels, -2, 2)), np.round(np.clip(preds, -2, 2)))
  return out


# -- contrastive evaluation -------------------------------------------------------------

def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
  top = x.max(axis=axis, keepdims=True)
  return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def retrieval_metrics(queries, keys) -> dict:
  """Cross-modal retrieval of row i of `keys` from row i of `queries` (cosine scores of
  normalised rows): recall at 1, 5 and 10 (fraction of queries whose true key ranks in
  the top k) and the median rank (1 = first). Ties count against the query.

  >>> retrieval_metrics(np.eye(3), np.eye(3))['r1']
  1.0
  """
  q, k = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
  scores = q @ k.T
  true = np.diag(scores)[:, None]
  rank = 1 + (scores > true).sum(1) + ((scores == true).sum(1) - 1)
  return {'r1': float((rank <= 1).mean()), 'r5': float((rank <= 5).mean()),
          'r10': float((rank <= 10).mean()), 'median_rank': float(np.median(rank))}


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(train_x, train_y, x, y, k: int, num_classes: int) -> float:
  """Accuracy of a majority vote of the `k` nearest train rows by cosine similarity
  (ties to the nearer neighbours' class: votes are weighted 1 + 1e-6 * similarity)."""
  sims = _unit(x) @ _unit(train_x).T
  k = min(k, sims.shape[1])
  top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
  votes = np.zeros((len(x), num_classes))
  rows = np.arange(len(x))[:, None]
  np.add.at(votes, (np.broadcast_to(rows, top.shape), np.asarray(train_y)[top]),
            1 + 1e-6 * sims[rows, top])
  return accuracy(y, votes.argmax(1))


def linear_probe(train_x, train_y, x, num_classes: int, l2: float = 1e-2,
                 logits: bool = False) -> np.ndarray:
  """Predicted classes of `x` (or, with `logits`, their (N, classes) scores) from a
  multinomial logistic regression fitted on (`train_x`, `train_y`): features standardised
  with the train split's statistics, mean cross-entropy plus `l2` * squared weights,
  L-BFGS (scipy; at most 300 iterations)."""
  from scipy import optimize
  train_x = np.asarray(train_x, np.float64)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  xs, ts = (train_x - mean) / std, (np.asarray(x, np.float64) - mean) / std
  y = np.asarray(train_y, np.int64)
  n, d = xs.shape
  onehot = np.eye(num_classes)[y]

  def objective(flat):
    w, b = flat[:d * num_classes].reshape(d, num_classes), flat[d * num_classes:]
    logits = xs @ w + b
    logp = logits - _logsumexp(logits, 1)[:, None]
    grad_logits = (np.exp(logp) - onehot) / n
    value = -(onehot * logp).sum() / n + l2 * (w ** 2).sum()
    grad = np.concatenate([(xs.T @ grad_logits + 2 * l2 * w).ravel(), grad_logits.sum(0)])
    return value, grad

  res = optimize.minimize(objective, np.zeros(d * num_classes + num_classes), jac=True,
                          method='L-BFGS-B', options={'maxiter': 300})
  w, b = res.x[:d * num_classes].reshape(d, num_classes), res.x[d * num_classes:]
  return ts @ w + b if logits else (ts @ w + b).argmax(1)
