import numpy as np
import pytest

from affectjax import metrics


def test_confusion_and_f1_by_hand():
  labels = [0, 0, 1, 1, 1, 2]
  preds = [0, 1, 1, 1, 2, 2]
  cm = metrics.confusion_matrix(labels, preds, 3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
  # class 0: P=1/1 R=1/2 -> F1=2/3; class 1: P=2/3 R=2/3 -> 2/3; class 2: P=1/2 R=1 -> 2/3
  np.testing.assert_allclose(metrics.per_class_f1(labels, preds, 3), [2 / 3] * 3)
  m = metrics.classification_metrics(labels, preds, 3, ['a', 'b', 'c'])
  assert m['accuracy'] == pytest.approx(4 / 6)
  assert m['weighted_f1'] == pytest.approx(2 / 3)
  assert m['macro_f1'] == pytest.approx(2 / 3)
  assert set(m['per_class_f1']) == {'a', 'b', 'c'}


def test_weighted_differs_from_macro():
  labels = [0, 0, 0, 1]
  preds = [0, 0, 0, 0]
  # class 0: P=3/4 R=1 -> F1=6/7; class 1: F1=0. weighted=3/4*6/7, macro=3/7
  assert metrics.weighted_f1(labels, preds, 2) == pytest.approx(0.75 * 6 / 7)
  assert metrics.macro_f1(labels, preds, 2) == pytest.approx(3 / 7)
  # A class absent from labels and predictions is left out of the macro mean.
  assert metrics.macro_f1(labels, preds, 5) == pytest.approx(3 / 7)


def test_logits_are_argmaxed():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
  assert metrics.classification_metrics([0, 1, 1], logits, 2)['accuracy'] == pytest.approx(2 / 3)


def test_sentiment_metrics_by_hand():
  labels = np.array([-2.6, -0.4, 0.0, 0.0, 1.2, 3.0])
  preds = np.array([-1.4, 0.3, -0.2, 0.6, 1.8, 2.4])
  m = metrics.sentiment_metrics(labels, preds)
  # non-0: drop the two zeros -> labels (-,-,+,+), preds (-,+,+,+): 3/4.
  assert m['acc2'] == pytest.approx(0.75)
  # F1 weighted: neg P=1 R=1/2 F1=2/3; pos P=2/3 R=1 F1=4/5; support 2/2 -> 11/15.
  assert m['f1'] == pytest.approx((2 / 3 + 4 / 5) / 2)
  # has-0: labels>=0 (F,F,T,T,T,T), preds>=0 (F,T,F,T,T,T): 4/6.
  assert m['acc2_has0'] == pytest.approx(4 / 6)
  # acc7: rounded labels (-3,-0,0,0,1,3) vs preds (-1,0,-0,1,2,2): matches at 2 and 3 -> 2/6.
  assert m['acc7'] == pytest.approx(2 / 6)
  # acc5: labels clipped to [-2,2] -> (-2,-0,0,0,1,2); preds (-1,0,-0,1,2,2): 3/6.
  assert m['acc5'] == pytest.approx(3 / 6)
  assert m['mae'] == pytest.approx(np.abs(labels - preds).mean())
  assert m['corr'] == pytest.approx(np.corrcoef(labels, preds)[0, 1])


def test_pearson_degenerate_is_zero():
  assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_paired_comparison_on_hand_made_folds():
  """Six folds, every one better by 2 to 4 points: mean +3, a t interval around it that
  excludes 0, and the exact sign test 2 * 0.5**6; a tie is dropped from the sign test."""
  from affectjax import studies
  a = np.array([0.62, 0.70, 0.55, 0.81, 0.66, 0.73])
  b = a - np.array([0.02, 0.03, 0.04, 0.03, 0.02, 0.04])
  r = studies.paired(a, b)
  assert r['n'] == 6 and r['wins'] == 6 and r['losses'] == 0
  assert r['mean'] == pytest.approx(0.03)
  half = 2.5706 * np.std(a - b, ddof=1) / np.sqrt(6)  # t(0.975, 5) = 2.5706
  assert r['low'] == pytest.approx(0.03 - half, abs=1e-4) and r['low'] > 0
  assert r['sign_p'] == pytest.approx(2 * 0.5 ** 6)
  tied = studies.paired([0.5, 0.6, 0.7], [0.5, 0.5, 0.8])
  assert (tied['wins'], tied['losses'], tied['sign_p']) == (1, 1, 1.0)
  assert studies.paired_text(a, b).startswith('+3.0 [')


def test_logistic_l2_is_chosen_on_validation_only():
  """The L2 is the grid's best on validation UAR (the smaller one on a tie; test labels are
  never given), the same on a rerun, and its validation score is the one reported."""
  from affectjax import studies
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 5))
  y = (x[:, 0] > 0).astype(int)
  noisy = rng.normal(size=(200, 40))  # Many useless dimensions: overfitting hurts.
  xtr = np.concatenate([x[:40, :1] + 0.3 * rng.normal(size=(40, 1)), noisy[:40]], 1)
  xva = np.concatenate([x[40:120, :1], noisy[40:120]], 1)
  xte = np.concatenate([x[120:, :1], noisy[120:]], 1)
  first = studies.select_logistic(xtr, y[:40], xva, y[40:120], [xte], 2, grid=(1e-4, 1.0))
  again = studies.select_logistic(xtr, y[:40], xva, y[40:120], [xte], 2, grid=(1e-4, 1.0))
  assert first['l2'] == again['l2']
  scores = {}
  for l2 in (1e-4, 1.0):
    pred = metrics.linear_probe(xtr, y[:40], xva, 2, l2)
    scores[l2] = metrics.unweighted_average_recall(y[40:120], pred, 2)
  assert first['l2'] == max(scores, key=lambda k: (scores[k], -k))
  assert first['valid_uar'] == pytest.approx(scores[first['l2']])
  assert first['predictions'][0].shape == (80,)
