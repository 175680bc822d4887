import numpy as np
import pytest

from affectjax.data import DataError, base, synthetic

SIZES = {'train': 4001, 'valid': 13}


def _gen(variant, regression=False, seed=5, num_classes=3):
  return synthetic.generate(variant, regression, num_classes, (7, 11, 13), SIZES, 0.5, seed)


@pytest.mark.parametrize('variant', synthetic.VARIANTS)
@pytest.mark.parametrize('regression', [False, True])
def test_deterministic_and_shaped(variant, regression):
  a, b = _gen(variant, regression), _gen(variant, regression)
  for split in SIZES:
    for k in a[split]:
      np.testing.assert_array_equal(a[split][k], b[split][k])
  assert a['train']['text'].shape == (4001, 7) and a['train']['vision'].shape == (4001, 13)
  assert a['valid']['label'].dtype == (np.float32 if regression else np.int32)
  c = _gen(variant, regression, seed=6)
  assert not np.array_equal(a['train']['text'], c['train']['text'])


def _decode(x, y, num_classes):
  """Nearest-class-mean accuracy from one modality: how much label it carries alone."""
  means = np.stack([x[y == c].mean(0) for c in range(num_classes)])
  pred = ((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)
  return (pred == y).mean()


def test_label_information_per_variant():
  """Redundant: every modality predicts y; unique: only modality 0; synergy: none alone."""
  for variant, informative in (('redundant', (1, 1, 1)), ('unique', (1, 0, 0)),
                               ('synergy', (0, 0, 0))):
    d = _gen(variant)['train']
    for m, inf in zip(synthetic.MODALITIES, informative):
      acc = _decode(d[m], d['label'], 3)
      if inf:
        assert acc > 0.8, (variant, m, acc)
      else:
        assert abs(acc - 1 / 3) < 0.05, (variant, m, acc)


def test_synergy_regression_has_no_additive_signal():
  splits = synthetic.generate('synergy', True, 2, (7, 11, 13), {'fit': 4001, 'held': 4001},
                              0.5, 5)

  def design(d):
    feats = [d[m] for m in synthetic.MODALITIES] + [d[m] ** 2 for m in synthetic.MODALITIES]
    return np.concatenate(feats + [np.ones((len(d['label']), 1))], axis=1)

  # The best additive predictor of a product of independent zero-mean latents is 0:
  # a least-squares fit on every modality's features (and squares) explains nothing
  # on held-out data.
  coef, *_ = np.linalg.lstsq(design(splits['fit']), splits['fit']['label'], rcond=None)
  held = splits['held']
  r2 = 1 - ((design(held) @ coef - held['label']) ** 2).mean() / held['label'].var()
  assert r2 < 0.01


def _arrays(n=11):
  rng = np.random.default_rng(0)
  return {'text': rng.normal(size=(n, 7)).astype(np.float32),
          'audio': rng.normal(size=(n, 5)).astype(np.float32),
          'label': rng.integers(0, 3, n).astype(np.int32)}


@pytest.mark.parametrize('mutate, message', [
    (lambda a: a['audio'].__setitem__((4, 2), np.nan),
     r"demo.npz:train: field 'audio' has 1 NaN/inf values \(first in example 4\)"),
    (lambda a: a['text'].__setitem__((0, 0), np.inf), "field 'text' has 1 NaN/inf"),
    (lambda a: a['label'].__setitem__(3, 7),
     r"field 'label' has 1 values outside \[0, 3\) \(first: 7 in example 3\)"),
    (lambda a: a['label'].__setitem__(3, -1), "outside"),
    (lambda a: a.__setitem__('audio', a['audio'][:9]),
     "field 'audio' has 9 examples but 'label' has 11"),
    (lambda a: a.pop('audio'), "field 'audio' is missing"),
])
def test_bad_data_is_reported_with_file_and_field(mutate, message):
  arrays = _arrays()
  mutate(arrays)
  with pytest.raises(DataError, match=message):
    base.Dataset.from_arrays({'train': arrays}, modalities=('text', 'audio'), num_classes=3,
                             where='demo.npz')


def test_bad_variant():
  with pytest.raises(ValueError, match='config.data.variant'):
    synthetic.generate('nope', False, 2, (3, 3, 3), SIZES, 0.1, 0)


def test_bayes_accuracy_is_the_ceiling():
  """The oracle beats decoding any single modality, and only it sees the synergy."""
  dims = (7, 11, 13)
  for variant in synthetic.VARIANTS:
    d = synthetic.generate(variant, False, 3, dims, {'test': 3001}, 1.0, 2)['test']
    oracle = synthetic.bayes_accuracy(d, variant, 3, dims, 1.0, 2)
    single = max(_decode(d[m], d['label'], 3) for m in synthetic.MODALITIES)
    assert oracle >= single - 0.01, (variant, oracle, single)
    if variant == 'synergy':
      assert oracle > 0.5 and single < 0.4
