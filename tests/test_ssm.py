"""S5 and selective-scan layers (affectjax/layers/ssm.py): scans, causality, padding, sharding."""

import flax.linen as nn
import ml_collections
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax import sharding
from affectjax.layers import ssm

LENGTHS = np.array([13, 9, 4])


def _inputs(width=7, length=13, seed=0):
  x = np.random.default_rng(seed).normal(size=(len(LENGTHS), length, width)).astype(np.float32)
  mask = (np.arange(length)[None] < LENGTHS[:, None]).astype(np.float32)
  return x, mask


@pytest.mark.parametrize('chunk', [1, 4, 13, 1024])
def test_linear_recurrence_equals_loop(chunk):
  rng = np.random.default_rng(1)
  a = (rng.uniform(0.5, 1.0, (2, 13, 3)) * np.exp(1j * rng.uniform(0, 3, (2, 13, 3))))
  b = rng.normal(size=(2, 13, 3)) + 1j * rng.normal(size=(2, 13, 3))
  h = np.zeros((2, 3), complex)
  expected = []
  for t in range(13):
    h = a[:, t] * h + b[:, t]
    expected.append(h)
  got = ssm.linear_recurrence(jnp.asarray(a, jnp.complex64), jnp.asarray(b, jnp.complex64),
                              chunk)
  np.testing.assert_allclose(np.asarray(got), np.stack(expected, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('method', ssm.SCAN_METHODS)
@pytest.mark.parametrize('chunk', [1, 5, 256])
def test_selective_scan_equals_step_by_step_recurrence(chunk, method):
  rng = np.random.default_rng(2)
  b_, length, d, n = 2, 11, 3, 5
  u = rng.normal(size=(b_, length, d))
  delta = rng.uniform(0.01, 0.5, (b_, length, d))
  a = -rng.uniform(0.5, 4, (d, n))
  bb, cc = rng.normal(size=(b_, length, n)), rng.normal(size=(b_, length, n))
  dd = rng.normal(size=d)
  h = np.zeros((b_, d, n))
  ys = []
  for t in range(length):
    h = np.exp(delta[:, t, :, None] * a) * h + (delta[:, t] * u[:, t])[..., None] * bb[:, t,
                                                                                       None]
    ys.append(np.einsum('bdn,bn->bd', h, cc[:, t]) + dd * u[:, t])
  got = ssm.selective_scan(*(jnp.asarray(v, jnp.float32) for v in (u, delta, a, bb, cc, dd)),
                           chunk=chunk, method=method)
  np.testing.assert_allclose(np.asarray(got), np.stack(ys, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('chunk', [1, 4, 13, 0])
def test_sequential_scan_gradients_equal_the_parallel_scans(chunk):
  # The sequential form's hand-written backward against autodiff of the parallel form,
  # for every input, under a mask, with chunks that do and do not divide the length.
  rng = np.random.default_rng(3)
  b_, length, d, n = 3, 13, 7, 5
  args = [jnp.asarray(v, jnp.float32) for v in (
      rng.normal(size=(b_, length, d)), rng.uniform(0.01, 0.5, (b_, length, d)),
      -rng.uniform(0.5, 4, (d, n)), rng.normal(size=(b_, length, n)),
      rng.normal(size=(b_, length, n)), rng.normal(size=d))]
  mask = jnp.asarray(np.arange(length)[None] < LENGTHS[:, None], jnp.float32)
  weights = jnp.asarray(rng.normal(size=(b_, length, d)), jnp.float32)

  def grads(method):
    loss = lambda *x: jnp.sum(ssm.selective_scan(*x, mask, chunk, method) * weights)
    return jax.grad(loss, argnums=tuple(range(6)))(*args)

  for got, want in zip(grads('sequential'), grads('parallel')):
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_auto_scan_is_the_sequential_form_on_cpu():
  rng = np.random.default_rng(4)
  args = [jnp.asarray(v, jnp.float32) for v in (
      rng.normal(size=(2, 11, 3)), rng.uniform(0.01, 0.5, (2, 11, 3)),
      -rng.uniform(0.5, 4, (3, 5)), rng.normal(size=(2, 11, 5)), rng.normal(size=(2, 11, 5)),
      rng.normal(size=3))]
  run = lambda m: np.asarray(jax.jit(lambda *x: ssm.selective_scan(*x, chunk=4, method=m))(
      *args))
  np.testing.assert_array_equal(run('auto'), run('sequential'))
  with pytest.raises(ValueError, match='selective scan method'):
    ssm.selective_scan(*args, method='fast')


def test_auto_scan_lowers_to_the_parallel_form_for_gpu_and_tpu():
  # The sequential form nests a loop over steps inside the loop over chunks; the parallel
  # form has only the loop over chunks. Lowered from this CPU host for each platform.
  args = [jnp.ones((2, 11, 3)), jnp.full((2, 11, 3), 0.1), -jnp.ones((3, 5)),
          jnp.ones((2, 11, 5)), jnp.ones((2, 11, 5)), jnp.ones(3)]

  def loops(method, platform):
    fn = jax.jit(lambda *x: ssm.selective_scan(*x, chunk=4, method=method))
    return fn.trace(*args).lower(lowering_platforms=(platform,)).as_text().count(
        'stablehlo.while')

  assert loops('sequential', 'cpu') == loops('parallel', 'cpu') + 1
  assert loops('auto', 'cpu') == loops('sequential', 'cpu')
  for platform in ('cuda', 'tpu'):
    assert loops('auto', platform) == loops('parallel', platform)


def test_s5_equals_its_discretised_recurrence():
  x, _ = _inputs(width=7, length=11)
  layer = ssm.S5(state_size=12, blocks=2, chunk=4)
  params = layer.init(jax.random.key(0), jnp.asarray(x))['params']
  p = jax.tree.map(lambda v: np.asarray(nn.unbox(v), np.float64), params,
                   is_leaf=lambda v: isinstance(v, nn.Partitioned))
  lam = np.minimum(p['lambda_re'], -1e-4) + 1j * p['lambda_im']
  lam_bar = np.exp(lam * np.exp(p['log_step']))
  b_bar = ((lam_bar - 1) / lam)[:, None] * (p['B'][..., 0] + 1j * p['B'][..., 1])
  c = p['C'][..., 0] + 1j * p['C'][..., 1]
  h = np.zeros((x.shape[0], 6), complex)
  ys = []
  for t in range(x.shape[1]):  # ZOH recurrence written out, one step at a time.
    h = lam_bar * h + x[:, t] @ b_bar.T
    ys.append(2 * np.real(h @ c.T) + p['D'] * x[:, t])
  got = layer.apply({'params': params}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), np.stack(ys, 1), rtol=1e-4, atol=1e-4)


def test_hippo_n_initialisation():
  lam, v = ssm.hippo_n_diagonal(8, blocks=2)
  assert np.allclose(lam.real, -0.5)
  # V diagonalises each HiPPO-N block: V diag(lambda) V^H is real with -1/2 on the diagonal.
  rebuilt = v @ np.diag(lam) @ v.conj().T
  assert np.allclose(rebuilt.imag, 0, atol=1e-10)
  assert np.allclose(np.diagonal(rebuilt.real), -0.5)
  assert np.allclose(rebuilt.real[:4, 4:], 0)  # Blocks do not mix.
  assert np.allclose(rebuilt.real[:4, :4] + rebuilt.real[:4, :4].T, -np.eye(4))


@pytest.mark.parametrize('kind', ['s5', 'mamba'])
def test_causal_block_does_not_look_ahead(kind):
  x, _ = _inputs()
  mask = np.ones(x.shape[:2], np.float32)
  block = ssm.SSMBlock(kind, bidirectional=False, chunk=4)
  params = block.init(jax.random.key(0), jnp.asarray(x), mask, train=False)
  base = np.asarray(block.apply(params, x, mask, train=False))
  changed = x.copy()
  changed[:, 6:] += 10 * np.random.default_rng(3).normal(size=changed[:, 6:].shape)
  out = np.asarray(block.apply(params, changed, mask, train=False))
  np.testing.assert_allclose(out[:, :6], base[:, :6], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[:, 6:], base[:, 6:])
  bi = ssm.SSMBlock(kind, bidirectional=True, chunk=4)
  params = bi.init(jax.random.key(0), jnp.asarray(x), mask, train=False)
  # The bidirectional block does read the future (so the check above can fail).
  assert not np.allclose(np.asarray(bi.apply(params, changed, mask, train=False))[:, :6],
                         np.asarray(bi.apply(params, x, mask, train=False))[:, :6])


@pytest.mark.parametrize('kind', ['s5', 'mamba'])
def test_padding_never_changes_real_outputs(kind):
  x, mask = _inputs()
  enc = ssm.SSMEncoder(11, num_layers=2, kind=kind, bidirectional=True, chunk=4)
  params = enc.init(jax.random.key(0), jnp.asarray(x), mask, train=False)
  real = mask > 0
  base = np.asarray(enc.apply(params, x, mask, train=False))
  noisy = x.copy()
  noisy[~real] = 1e3 * np.random.default_rng(4).normal(size=noisy[~real].shape)
  longer = np.concatenate([noisy, 5 * np.ones((3, 6, 7), np.float32)], 1)
  longer_mask = np.concatenate([mask, np.zeros((3, 6), np.float32)], 1)
  for inp, m in ((noisy, mask), (longer, longer_mask)):
    out = np.asarray(enc.apply(params, inp, m, train=False))
    np.testing.assert_allclose(out[:, :13][real], base[real], rtol=1e-4, atol=1e-4)
    assert np.all(out[m == 0] == 0)
  # Variable-length batch: each sequence alone, unpadded, gives its batched outputs.
  for i, n in enumerate(LENGTHS):
    alone = np.asarray(enc.apply(params, x[i:i + 1, :n], mask[i:i + 1, :n], train=False))
    np.testing.assert_allclose(alone[0], base[i, :n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', ['s5', 'mamba'])
def test_gradients_finite_on_long_sequences(kind):
  length = 4096
  x = np.random.default_rng(5).normal(size=(2, length, 8)).astype(np.float32)
  mask = np.ones((2, length), np.float32)
  mask[1, 3000:] = 0
  enc = ssm.SSMEncoder(8, num_layers=1, kind=kind, bidirectional=True)
  params = enc.init(jax.random.key(0), jnp.asarray(x[:, :16]), mask[:, :16], train=False)

  def loss(p):
    return jnp.mean(enc.apply(p, x, mask, train=False)[:, -1000:] ** 2) + jnp.mean(
        enc.apply(p, x, mask, train=False)[:, :10] ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize('kind,scan', [('s5', 'auto'), ('mamba', 'auto'),
                                       ('mamba', 'parallel')])
def test_one_device_equals_4x2_mesh(kind, scan):
  x, mask = _inputs(width=6, length=13)
  x = np.concatenate([x, x[::-1] * 0.5, x[:2]], 0)  # 8 sequences: 4 per data shard... x2.
  mask = np.concatenate([mask, mask[::-1], mask[:2]], 0)
  enc = ssm.SSMEncoder(8, num_layers=2, kind=kind, bidirectional=True, chunk=4, scan=scan)
  boxed = enc.init(jax.random.key(0), jnp.asarray(x), mask, train=False)
  params = nn.unbox(boxed)
  single = np.asarray(jax.jit(lambda p, a, m: enc.apply(p, a, m, train=False))(params, x, mask))
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': 4, 'model': 2}),
                            jax.devices()[:8])
  rules = sharding.LOGICAL_AXIS_RULES
  p_shard = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  b_shard = sharding.batch_sharding(mesh, rules, 3)
  m_shard = sharding.batch_sharding(mesh, rules, 2)

  def apply(p, a, m):
    with nn.logical_axis_rules(rules):
      return enc.apply(p, a, m, train=False)

  fn = jax.jit(apply, in_shardings=(p_shard, b_shard, m_shard), out_shardings=b_shard)
  placed = jax.device_put(params, p_shard)
  sharded = fn(placed, jax.device_put(x, b_shard), jax.device_put(mask, m_shard))
  if kind == 'mamba':  # The inner channels really are split over the model axis.
    kernel = placed['params']['block_0']['forward']['in_proj']['kernel']
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, 'model')
  np.testing.assert_allclose(np.asarray(sharded), single, rtol=1e-4, atol=1e-4)
