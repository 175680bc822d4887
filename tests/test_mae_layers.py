"""Masked-autoencoder building blocks: patches, sin-cos positions, masking, the block set."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax.layers import attention, masking, patches, positions


def test_patchify_is_the_exact_inverse_of_unpatchify_and_orders_row_major():
  x = np.random.default_rng(0).normal(size=(2, 8, 6)).astype(np.float32)  # (B, T, F)
  p = patches.patchify(x, (4, 3))
  assert p.shape == (2, 4, 12)
  # Patch 1 is time 0..3, frequency 3..5 (row-major over (time, frequency) patches).
  np.testing.assert_array_equal(p[:, 1], x[:, 0:4, 3:6].reshape(2, 12))
  np.testing.assert_array_equal(patches.unpatchify(p, (4, 3), (8, 6)), x)
  video = np.random.default_rng(1).normal(size=(2, 4, 6, 6, 3)).astype(np.float32)
  t = patches.patchify(video, (2, 3, 3))  # Tubelets: (2 x 2 x 2) grid of 2x3x3x3 values.
  assert t.shape == (2, 8, 54)
  np.testing.assert_array_equal(t[:, 3], video[:, 0:2, 3:6, 3:6].reshape(2, 54))
  np.testing.assert_array_equal(patches.unpatchify(t, (2, 3, 3), (4, 6, 6, 3)), video)
  with pytest.raises(ValueError, match=r'axis 1 has 6 values, not a multiple of the patch size 4'):
    patches.patchify(x, (4, 4))


def test_patch_embedding_is_a_strided_convolution():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 6, 1)), jnp.float32)
  layer = patches.PatchEmbed((4, 3), 5)
  params = layer.init(jax.random.key(0), x)['params']
  got = layer.apply({'params': params}, x)
  kernel = params['projection']['kernel'].value.reshape(4, 3, 1, 5)
  conv = jax.lax.conv_general_dilated(x, kernel, (4, 3), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(got, conv.reshape(2, 4, 5) + params['projection']['bias'].value,
                             atol=1e-5)


def test_sincos_positions_1d_2d_3d():
  one = np.asarray(positions.sincos_positions((7,), 8))
  pos, i = np.arange(7)[:, None], np.arange(4)[None]
  angle = pos / 10000.0 ** (i / 4)
  np.testing.assert_allclose(one, np.concatenate([np.sin(angle), np.cos(angle)], 1), atol=1e-6)
  two = np.asarray(positions.sincos_positions((3, 5), 16))
  assert two.shape == (15, 16)
  # Separable: the first half depends on the row only, the second on the column only.
  grid = two.reshape(3, 5, 16)
  np.testing.assert_allclose(grid[:, :1, :8].repeat(5, 1), grid[..., :8], atol=1e-7)
  np.testing.assert_allclose(grid[:1, :, 8:].repeat(3, 0), grid[..., 8:], atol=1e-7)
  three = positions.sincos_positions((2, 3, 4), 20)  # 20 = 8 + 6 + 6.
  assert three.shape == (24, 20) and len(np.unique(np.asarray(three), axis=0)) == 24


def test_random_masking_is_per_example_exact_and_reproducible():
  key = jax.random.key(3)
  keep, masked = masking.random_masking(key, 16, 40, 0.75)
  assert keep.shape == (16, 10) and masked.shape == (16, 40)
  np.testing.assert_array_equal(masked.sum(1), 30)
  for b in range(16):  # The kept indices are exactly the unmasked positions, ascending.
    np.testing.assert_array_equal(keep[b], np.flatnonzero(np.asarray(masked[b]) == 0))
  assert len({tuple(np.asarray(k)) for k in keep}) == 16  # A different mask per example.
  again, _ = masking.random_masking(key, 16, 40, 0.75)
  np.testing.assert_array_equal(keep, again)  # Same key (same step on resume): same mask.
  other, _ = masking.random_masking(jax.random.fold_in(key, 1), 16, 40, 0.75)
  assert (np.asarray(other) != np.asarray(keep)).any()
  tokens = jnp.arange(16 * 40 * 2, dtype=jnp.float32).reshape(16, 40, 2)
  visible = masking.take(tokens, keep)
  back = masking.scatter(visible, keep, 40, jnp.full((2,), -1.0))
  np.testing.assert_array_equal(np.where(np.asarray(masked)[..., None] > 0, -1.0, tokens), back)
  with pytest.raises(ValueError, match='mask_ratio=1.0'):
    masking.random_masking(key, 2, 4, 1.0)


def test_tube_masking_repeats_one_spatial_mask_over_time():
  keep, masked = masking.tube_masking(jax.random.key(4), 3, (4, 3, 3), 0.9)
  grid = np.asarray(masked).reshape(3, 4, 9)
  assert (grid == grid[:, :1]).all()  # Same spatial mask at every time step.
  np.testing.assert_array_equal(grid[:, 0].sum(1), 8)  # round(0.1 * 9) = 1 visible per step.
  assert keep.shape == (3, 4)
  for b in range(3):
    np.testing.assert_array_equal(keep[b], np.flatnonzero(np.asarray(masked[b]) == 0))


def test_cpu_attention_equals_jax_dot_product_attention_in_value_and_gradient():
  """The CPU form (heads-major GEMMs, hand-written backward) is the same function as
  jax.nn.dot_product_attention: values and gradients of q, k, v, for key-padding, per-head
  and causal masks, no mask, and a fully masked example (uniform attention, no gradient
  through its constant logits); cross-attention lengths differ (7 queries, 11 keys)."""
  rng = np.random.default_rng(11)
  b, nq, nk, h, d = 3, 7, 11, 2, 5
  q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for n in (nq, nk, nk))
  padding = jnp.asarray(rng.random((b, 1, 1, nk)) > 0.4).at[2].set(False)
  masks = {'none': None, 'padding': padding,
           'per head': jnp.asarray(rng.random((b, h, nq, nk)) > 0.5),
           'causal': jnp.tril(jnp.ones((nq, nk), bool))[None, None]}
  weights = jnp.asarray(rng.normal(size=(b, nq, h, d)), jnp.float32)
  for name, mask in masks.items():
    def loss(fn):
      return lambda q, k, v: (fn(q, k, v) * weights).sum()
    ours = lambda q, k, v: attention.dot_product_attention(q, k, v, mask)  # noqa: E731
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)  # noqa: E731
    np.testing.assert_allclose(jax.jit(ours)(q, k, v), ref(q, k, v), atol=1e-6, err_msg=name)
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v)
    for g, w, arg in zip(got, want, 'qkv'):
      np.testing.assert_allclose(g, w, atol=1e-5, err_msg=f'{name}: d{arg}')
  # The fully masked example attends uniformly, and its q and k get no gradient.
  out = attention.dot_product_attention(q, k, v, padding)
  np.testing.assert_allclose(out[2], jnp.broadcast_to(v[2].mean(0), (nq, h, d)), atol=1e-6)
  dq, dk, _ = jax.grad(loss(lambda q, k, v: attention.dot_product_attention(q, k, v, padding)),
                       argnums=(0, 1, 2))(q, k, v)
  assert not np.asarray(dq[2]).any() and not np.asarray(dk[2]).any()


def test_cpu_attention_with_a_bias_equals_jax_in_value_and_gradient():
  """An additive logit bias (WavLM's relative positions), shared over the batch (1, H, Q, K)
  or per example: values and gradients of q, k, v and of the bias itself equal
  jax.nn.dot_product_attention's, with and without a padding mask; the explicit-softmax
  path (attention dropout) adds it the same way."""
  rng = np.random.default_rng(13)
  b, nq, nk, h, d = 3, 7, 11, 2, 5
  q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for n in (nq, nk, nk))
  weights = jnp.asarray(rng.normal(size=(b, nq, h, d)), jnp.float32)
  padding = jnp.asarray(rng.random((b, 1, 1, nk)) > 0.3).at[:, :, :, 0].set(True)
  for shape in ((1, h, nq, nk), (b, h, nq, nk)):
    bias = jnp.asarray(rng.normal(size=shape), jnp.float32)
    for mask in (None, padding):
      ours = lambda q, k, v, bias: attention.dot_product_attention(q, k, v, mask, bias)  # noqa
      ref = lambda q, k, v, bias: jax.nn.dot_product_attention(q, k, v, bias, mask)  # noqa
      np.testing.assert_allclose(jax.jit(ours)(q, k, v, bias), ref(q, k, v, bias), atol=1e-6)
      loss = lambda fn: lambda *a: (fn(*a) * weights).sum()  # noqa: E731
      got = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2, 3)))(q, k, v, bias)
      want = jax.grad(loss(ref), argnums=(0, 1, 2, 3))(q, k, v, bias)
      for g, w, arg in zip(got, want, ('q', 'k', 'v', 'bias')):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, err_msg=f'{shape} d{arg}')
  x = jnp.asarray(rng.normal(size=(b, nq, 8)), jnp.float32)
  keys = jnp.ones((b, 1, 1, nq), bool)
  bias = jnp.asarray(rng.normal(size=(1, 2, nq, nq)), jnp.float32)

  class Both(nn.Module):
    @nn.compact
    def __call__(self, x, dropout):
      return attention.multi_head_attention(x, x, keys, 2, dropout, train=False, bias=bias)
  params = Both().init(jax.random.key(0), x, 0.0)
  np.testing.assert_allclose(Both().apply(params, x, 0.1), Both().apply(params, x, 0.0),
                             atol=1e-5)


def test_attention_form_is_picked_per_platform_when_lowered():
  """The CPU lowering runs the hand-written form; a TPU lowering from this CPU host gets
  jax.nn.dot_product_attention (no residual of the probabilities in its backward)."""
  q = jnp.zeros((2, 5, 2, 4), jnp.float32)

  def grad_of(q):
    return jax.grad(lambda q: attention.dot_product_attention(q, q, q).sum())(q)
  cpu = jax.jit(grad_of).lower(q).as_text(debug_info=True)
  assert 'bhqd,bhqk->bhdk' in cpu and 'BTNH' not in cpu  # The hand-written backward.
  tpu = jax.jit(grad_of).trace(q).lower(lowering_platforms=('tpu',)).as_text(debug_info=True)
  assert 'bhqd,bhqk->bhdk' not in tpu and 'BTNH,BSNH->BNTS' in tpu


@pytest.mark.parametrize('norm', ['post', 'pre'])
def test_fused_attention_path_equals_the_explicit_softmax(norm):
  """attention_dropout=0 takes jax.nn.dot_product_attention; with attention dropout the
  explicit masked softmax runs. Outside training both are the same function of the same
  parameters; padded keys do not matter and padded positions come out zero."""
  x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 6, 8)), jnp.float32)
  mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5], jnp.float32)
  fused = attention.TransformerEncoderLayer(2, 16, 0.1, norm=norm, attention_dropout=0.0,
                                            activation='gelu')
  explicit = attention.TransformerEncoderLayer(2, 16, 0.1, norm=norm, attention_dropout=0.1,
                                               activation='gelu')
  params = fused.init(jax.random.key(0), x, mask, train=False)
  a = fused.apply(params, x, mask, train=False)
  b = explicit.apply(params, x, mask, train=False)
  np.testing.assert_allclose(a, b, atol=1e-5)
  noisy = x.at[1, 4:].set(100.0).at[2, 1:].set(-7.0)
  np.testing.assert_allclose(fused.apply(params, noisy, mask, train=False), a, atol=1e-5)
  assert not np.asarray(a)[np.asarray(mask) == 0].any()
  stack = attention.TransformerEncoder(2, 2, 16)
  variables = stack.init(jax.random.key(1), x, mask, train=False)
  out, hidden = stack.apply(variables, x, mask, train=False, return_hidden=True)
  assert out.shape == x.shape and len(hidden) == 2 and 'norm_out' in variables['params']
  # Intermediate layers come out through the same final norm (HiCMAE's features): the
  # last is the output, and the norm's learnt scale reaches the first.
  np.testing.assert_allclose(hidden[-1], out)
  scaled = jax.tree_util.tree_map(lambda v: v, variables)
  scaled['params']['norm_out']['scale'] = 3 * scaled['params']['norm_out']['scale']
  _, again = stack.apply(scaled, x, mask, train=False, return_hidden=True)
  real = np.asarray(mask) > 0
  np.testing.assert_allclose(np.asarray(again[0])[real], 3 * np.asarray(hidden[0])[real],
                             rtol=1e-4, atol=1e-5)
  assert not np.asarray(hidden[0])[~real].any()
