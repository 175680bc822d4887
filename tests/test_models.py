import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import models, train
from affectjax.layers import fusion
from conftest import config_path


def test_tensor_fusion_by_hand():
  h1 = jnp.array([[2.0, 3.0]])
  h2 = jnp.array([[5.0]])
  # [2, 3, 1] (x) [5, 1] = [10, 2, 15, 3, 5, 1]
  np.testing.assert_allclose(fusion.tensor_fusion([h1, h2]), [[10, 2, 15, 3, 5, 1]])


def test_low_rank_fusion_equals_full_tensor_with_factored_weights():
  rng = np.random.default_rng(0)
  dims, rank, out, batch = (3, 5, 2), 4, 7, 11
  hs = [jnp.asarray(rng.normal(size=(batch, d)), jnp.float32) for d in dims]
  factors = [jnp.asarray(rng.normal(size=(rank, d + 1, out)), jnp.float32) for d in dims]
  w = jnp.asarray(rng.normal(size=rank), jnp.float32)
  bias = jnp.asarray(rng.normal(size=out), jnp.float32)
  full = jnp.einsum('r,raf,rbf,rcf->abcf', w, *factors).reshape(-1, out)
  expected = fusion.tensor_fusion(hs) @ full + bias
  np.testing.assert_allclose(fusion.low_rank_fusion(hs, factors, w, bias), expected,
                             rtol=1e-4, atol=1e-4)


MODELS = ['synthetic.py:early', 'synthetic.py:late', 'synthetic.py:tfn', 'synthetic.py:lmf']


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('modalities', [('text', 'audio', 'vision'), ('text', 'vision')])
def test_output_shapes_and_dropout(name, modalities):
  c = config_lib.load(config_path(name))
  model = models.get_model(c.model, modalities, out_dim=5)
  rng = np.random.default_rng(1)
  batch = {m: jnp.asarray(rng.normal(size=(7, d)), jnp.float32)
           for m, d in zip(('text', 'audio', 'vision'), (13, 11, 17))}
  params = model.init(jax.random.PRNGKey(0), batch)['params']
  out = model.apply({'params': params}, batch)
  assert out.shape == (7, 5)
  # Deterministic at eval time; dropout changes the output in training mode.
  np.testing.assert_array_equal(out, model.apply({'params': params}, batch))
  dropped = model.apply({'params': params}, batch, train=True,
                        rngs={'dropout': jax.random.PRNGKey(1)})
  assert not np.allclose(out, dropped)


def test_unknown_model_field_is_an_error():
  c = config_lib.load(config_path('synthetic.py:tfn'))
  with c.unlocked():
    c.model.colour = 'red'
  with pytest.raises(ValueError, match='config.model.colour'):
    models.get_model(c.model, ('text',), 2)


def _synergy_run(tmp_path, name):
  c = config_lib.load(config_path(name), [
      'data.num_train=8192', 'data.num_test=2048', 'train.num_steps=1200',
      'train.eval_every=400', 'train.log_every=400'])
  return train.train_and_evaluate(c, str(tmp_path / name))


def test_tfn_learns_synergy_where_late_fusion_stays_at_chance(tmp_path):
  """The label is the parity of three per-modality bits: only a multiplicative
  interaction reveals it. Late fusion (additive) must stay at chance (0.5)."""
  tfn = _synergy_run(tmp_path, 'synthetic.py:tfn')['test']['accuracy']
  late = _synergy_run(tmp_path, 'synthetic.py:late')['test']['accuracy']
  assert tfn > 0.6, tfn
  # 2048 test examples: the standard error at chance is 0.011.
  assert abs(late - 0.5) < 0.045, late


def test_lstm_matches_stepwise_reference_and_ignores_padding():
  from affectjax.layers.recurrent import LSTM
  rng = np.random.default_rng(3)
  b, t, d, h = 5, 13, 7, 11
  x = rng.normal(size=(b, t, d)).astype(np.float32)
  lengths = np.array([13, 1, 7, 4, 10])
  layer = LSTM(h)
  params = layer.init(jax.random.PRNGKey(0), x, lengths)['params']
  out = np.asarray(layer.apply({'params': params}, x, lengths))
  params = flax.linen.meta.unbox(params)
  w_x, b_x = np.asarray(params['input']['kernel']), np.asarray(params['input']['bias'])
  w_h = np.asarray(params['recurrent'])
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  for i in range(b):
    hs, cs = np.zeros(h), np.zeros(h)
    for step in range(lengths[i]):
      z = x[i, step] @ w_x + b_x + hs @ w_h
      gi, gf, gg, go = np.split(z, 4)
      cs = sig(gf) * cs + sig(gi) * np.tanh(gg)
      hs = sig(go) * np.tanh(cs)
    np.testing.assert_allclose(out[i], hs, rtol=1e-4, atol=1e-5)
  # Garbage in the padded steps changes nothing.
  x2 = x.copy()
  for i, n in enumerate(lengths):
    x2[i, n:] = 1e3
  np.testing.assert_array_equal(layer.apply({'params': params}, x2, lengths), out)


def test_bilstm_joint_scan_equals_one_lstm_per_direction():
  """BiLSTM runs both directions in one scan; each half must equal its own LSTM (the
  backward one over each sequence reversed within its length)."""
  from affectjax.layers.recurrent import LSTM, BiLSTM, reverse_valid
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(4, 9, 5)).astype(np.float32))
  lengths = jnp.array([9, 2, 6, 1])
  layer = BiLSTM(7, num_layers=2)
  params = layer.init(jax.random.PRNGKey(1), x, lengths, train=False)['params']
  out = np.asarray(layer.apply({'params': params}, x, lengths, train=False))
  one = LSTM(7, return_sequences=True)
  inp = x
  for i in range(2):
    fwd = one.apply({'params': params[f'forward_{i}']}, inp, lengths)
    bwd = one.apply({'params': params[f'backward_{i}']}, reverse_valid(inp, lengths), lengths)
    inp = jnp.concatenate([fwd, reverse_valid(bwd, lengths)], axis=-1)
  np.testing.assert_allclose(out, np.asarray(inp), rtol=1e-5, atol=1e-6)
  assert out.shape == (4, 9, 14) and np.all(out[1, 2:] == 0)


@pytest.mark.parametrize('rate', [0.5, 0.3])
def test_byte_dropout_keeps_expected_fraction_and_mean(rate):
  from affectjax.layers.dropout import ByteDropout
  x = jnp.ones((13, 7919))
  y = ByteDropout(rate).apply({}, x, rngs={'dropout': jax.random.PRNGKey(0)})
  kept = np.asarray(y) > 0
  threshold = round(rate * 256) / 256
  assert abs(kept.mean() - (1 - threshold)) < 0.01
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - threshold), rtol=1e-6)
  assert abs(float(y.mean()) - 1.0) < 0.02
  np.testing.assert_array_equal(ByteDropout(rate, deterministic=True).apply({}, x), x)
  other = ByteDropout(rate).apply({}, x, rngs={'dropout': jax.random.PRNGKey(1)})
  assert not np.array_equal(np.asarray(other) > 0, kept)


def test_counter_bits_look_random():
  """ByteDropout's hashed-counter bits: uniform bytes in every lane, no correlation
  between neighbours or between keys, each bit fair."""
  from affectjax.layers.dropout import counter_bits
  words = 1 << 18
  a = np.asarray(counter_bits(jax.random.PRNGKey(0), words))
  b = np.asarray(counter_bits(jax.random.PRNGKey(1), words))
  assert len(np.unique(a)) > 0.99 * words  # a bijection of the counter: no short cycles.
  # Each of the four byte lanes is uniform over 256 values (chi-square, 255 dof; the
  # 0.9999 quantile is about 346).
  lanes = a.view(np.uint8).reshape(words, 4)
  for lane in range(4):
    counts = np.bincount(lanes[:, lane], minlength=256)
    chi2 = ((counts - words / 256) ** 2 / (words / 256)).sum()
    assert chi2 < 346, (lane, chi2)
  # Every bit is set half the time (+-5 standard errors).
  bits = np.unpackbits(a.view(np.uint8)).reshape(words, 32)
  assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * 0.5 / np.sqrt(words))
  # Dropout-style keep masks at rate 0.3: neighbours (the next element, the next word)
  # and the other key's mask are uncorrelated.
  keep_a = lanes.reshape(-1) >= 77
  keep_b = b.view(np.uint8) >= 77
  tol = 5 / np.sqrt(keep_a.size)
  for u, v in ((keep_a[:-1], keep_a[1:]), (keep_a[:-4], keep_a[4:]), (keep_a, keep_b)):
    assert abs(np.corrcoef(u, v)[0, 1]) < tol
