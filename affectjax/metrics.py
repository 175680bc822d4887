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


def classification_metrics(labels, logits_or_preds, num_classes: int,
                           class_names: Sequence[str] | None = None) -> dict:
  """Accuracy, weighted/macro F1, per-class F1 and the confusion matrix.

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
