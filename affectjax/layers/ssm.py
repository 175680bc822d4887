"""State-space sequence layers: S5 and a selective (Mamba-style) SSM.

Both are linear recurrences h_t = a_t * h_{t-1} + b_t (elementwise a_t), solved with
`jax.lax.associative_scan` inside fixed-size chunks, the chunks chained by a
`lax.scan` that carries only the state. The chunk body is rematerialised in the
backward pass, so activation memory grows linearly with length and the large
(length, channels, state) tensors of the selective scan exist one chunk at a time.

The selective scan has a second, sequential form for CPUs (`selective_scan`'s `method`):
one time step per loop iteration with the discretisation fused into the step, so the
(length, channels, state) tensors are never formed; chosen by `jax.lax.platform_dependent`
at lowering, so the same jitted step compiles the parallel form for GPU and TPU.

Padding: at a masked step the transition is the identity (a = 1, b = 0), so the state
passes through padding unchanged wherever it sits; inputs are zeroed there and
outputs set to zero. The backward direction of the bidirectional wrapper flips the
whole padded sequence, which is exact for the same reason.

References: Smith, Warrington and Linderman 2023, "Simplified State Space Layers for
Sequence Modeling" (S5); Gu and Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces".
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affectjax.layers.dense import dense


def _combine(left, right):
  a1, b1 = left
  a2, b2 = right
  return a2 * a1, a2 * b1 + b2


def _chunk_scan(a, b, h0):
  """h_t = a_t h_{t-1} + b_t over axis 1 of (B, C, ...) with initial state h0 (B, ...)."""
  a_cum, b_cum = jax.lax.associative_scan(_combine, (a, b), axis=1)
  return a_cum * h0[:, None] + b_cum


def _to_chunks(x: jax.Array, chunk: int) -> jax.Array:
  """(B, L, ...) with L a multiple of `chunk` -> (L/chunk, B, chunk, ...)."""
  b, length = x.shape[:2]
  return jnp.moveaxis(x.reshape(b, length // chunk, chunk, *x.shape[2:]), 1, 0)


def _from_chunks(x: jax.Array) -> jax.Array:
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _pad_time(x: jax.Array, length: int) -> jax.Array:
  pad = length - x.shape[1]
  return x if pad == 0 else jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))


def chunked_scan(inputs: tuple, chunk_fn, h0: jax.Array, chunk: int) -> jax.Array:
  """Runs `chunk_fn(h, *chunk_inputs) -> (h_last, y_chunk)` over time chunks.

  `inputs` are (B, L, ...) arrays; L is padded to a multiple of `chunk` with zeros
  (callers make zero inputs an identity step). Returns y (B, L, ...).
  """
  length = inputs[0].shape[1]
  chunk = max(1, min(chunk, length))
  padded = -(-length // chunk) * chunk
  xs = tuple(_to_chunks(_pad_time(x, padded), chunk) for x in inputs)
  body = jax.checkpoint(lambda h, x: chunk_fn(h, *x))
  _, ys = jax.lax.scan(body, h0, xs)
  return _from_chunks(ys)[:, :length]


def linear_recurrence(a: jax.Array, b: jax.Array, chunk: int = 1024) -> jax.Array:
  """All states of h_t = a_t * h_{t-1} + b_t, h_0 = 0, for (B, L, ...) a and b.

  Args:
    a: transitions, broadcastable to `b` (real or complex).
    b: inputs (B, L, ...).
    chunk: time steps per associative scan.
  Returns:
    h: (B, L, ...), h[:, t] the state after step t.

  Example: `linear_recurrence(jnp.full((1, 3, 1), .5), jnp.ones((1, 3, 1)))[0, :, 0]`
  is [1, 1.5, 1.75].
  """
  a = jnp.broadcast_to(a, b.shape)
  h0 = jnp.zeros((b.shape[0], *b.shape[2:]), b.dtype)

  def body(h, a_c, b_c):
    hs = _chunk_scan(a_c, b_c, h)
    return hs[:, -1], hs

  return chunked_scan((a, b), body, h0, chunk)


def _time_major_chunks(x: jax.Array, chunk: int) -> jax.Array:
  """(B, L, ...) -> (L'/chunk, chunk, B, ...), L zero-padded to L' = a multiple of chunk."""
  length = -(-x.shape[1] // chunk) * chunk
  x = _pad_time(x, length)
  x = x.reshape(x.shape[0], length // chunk, chunk, *x.shape[2:])
  return jnp.moveaxis(x, 0, 2)


def _from_time_major_chunks(x: jax.Array, length: int) -> jax.Array:
  x = jnp.moveaxis(x, 2, 0)
  return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def _selective_step(h, a, u_t, delta_t, b_t):
  """One step of the recurrence: state (B, D, N), inputs (B, D), (B, D), (B, N)."""
  return jnp.exp(delta_t[..., None] * a) * h + (delta_t * u_t)[..., None] * b_t[:, None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _sequential_selective_scan(u, delta, a, b, c, chunk):
  """sum_n c_t,n h_t,n of the selective recurrence, one time step per loop iteration.

  Hand-written backward: autodiff of the step loop reduces over channels and batch at
  every step (the B, C and A gradients), which costs about ten forward passes on a CPU
  and, with channels sharded over `model`, a collective per step. Here the reverse loop
  only carries the state adjoint g_t = c_t dy_t + exp(delta_{t+1} a) g_{t+1}; every
  reduction runs once per chunk over the chunk's recomputed states.
  """
  return _sequential_forward(u, delta, a, b, c, chunk)[0]


def _sequential_forward(u, delta, a, b, c, chunk):
  length = u.shape[1]
  xs = tuple(_time_major_chunks(x, chunk) for x in (u, delta, b, c))
  h0 = jnp.zeros((u.shape[0], u.shape[2], a.shape[1]), jnp.float32)

  def chunk_fn(h, x):
    u_c, delta_c, b_c, c_c = x

    def step(h, x_t):
      h = _selective_step(h, a, *x_t[:3])
      return h, jnp.einsum('bdn,bn->bd', h, x_t[3])

    h_next, y = jax.lax.scan(step, h, (u_c, delta_c, b_c, c_c))
    return h_next, (y, h)

  _, (y, h_starts) = jax.lax.scan(chunk_fn, h0, xs)
  return _from_time_major_chunks(y, length), (xs, h_starts)


def _sequential_fwd(u, delta, a, b, c, chunk):
  y, (xs, h_starts) = _sequential_forward(u, delta, a, b, c, chunk)
  return y, (xs, a, h_starts)


def _sequential_bwd(chunk, res, dy):
  (u, delta, b, c), a, h_starts = res
  length = dy.shape[1]
  dy = _time_major_chunks(dy, chunk)

  def chunk_fn(q, x):
    u_c, delta_c, b_c, c_c, dy_c, h_start = x

    def state(h, x_t):
      h = _selective_step(h, a, *x_t)
      return h, h

    _, hs = jax.lax.scan(state, h_start, (u_c, delta_c, b_c))  # Recomputed, (C, B, D, N).
    da = jnp.exp(delta_c[..., None] * a)  # (C, B, D, N)

    def step(q, x_t):
      da_t, dy_t, c_t = x_t
      g = dy_t[..., None] * c_t[:, None, :] + q
      return da_t * g, g

    q, g = jax.lax.scan(step, q, (da, dy_c, c_c), reverse=True)
    h_prev = jnp.concatenate([h_start[None], hs[:-1]], 0)
    g_b = jnp.einsum('cbdn,cbn->cbd', g, b_c)
    g_decay = g * da * h_prev
    return q, (g_b * delta_c,
               jnp.einsum('cbdn,dn->cbd', g_decay, a) + g_b * u_c,
               jnp.einsum('cbdn,cbd->dn', g_decay, delta_c),
               jnp.einsum('cbdn,cbd->cbn', g, delta_c * u_c),
               jnp.einsum('cbdn,cbd->cbn', hs, dy_c))

  q0 = jnp.zeros_like(h_starts[0])
  _, (du, ddelta, da, db, dc) = jax.lax.scan(chunk_fn, q0, (u, delta, b, c, dy, h_starts),
                                             reverse=True)
  unchunk = lambda x: _from_time_major_chunks(x, length)
  return unchunk(du), unchunk(ddelta), da.sum(0), unchunk(db), unchunk(dc)


_sequential_selective_scan.defvjp(_sequential_fwd, _sequential_bwd)


SCAN_METHODS = ('auto', 'parallel', 'sequential')
# Default chunk per form; the sequential one was the fastest of 32..256 on a 2-core CPU.
SCAN_CHUNK = {'parallel': 256, 'sequential': 128}
# What method='auto' runs per platform (`jax.lax.platform_dependent`; 'default': the rest).
AUTO_SCAN = {'cpu': 'sequential', 'default': 'parallel'}


def selective_scan(u, delta, a, b, c, d, mask=None, chunk: int = 0,
                   method: str = 'auto') -> jax.Array:
  """The selective state-space scan of Mamba (Gu and Dao 2023, Algorithm 2).

  For channel i and state n: h_t = exp(delta_t,i a_i,n) h_{t-1} + delta_t,i b_t,n u_t,i,
  y_t,i = sum_n c_t,n h_t,n + d_i u_t,i (zero-order hold for A, Euler for B, as the
  reference implementation).

  Two exact forms of the same recurrence, both rematerialised per chunk of `chunk` steps:
  'parallel' forms the (B, chunk, D, N) transition and input tensors and runs an
  associative scan over them (log-depth: what GPUs and TPUs want); 'sequential' takes one
  time step per loop iteration with exp(delta a) and the input fused into the step, so
  nothing larger than the (B, D, N) state exists. On a CPU the parallel form is bound by
  memory traffic over those tensors and the sequential one is several times faster
  (experiments/benchmarks/README.md). 'auto' picks sequential on CPU and parallel
  elsewhere, at lowering time (`jax.lax.platform_dependent`), so an ahead-of-time compile
  for TPU from a CPU host gets the parallel form.

  Args:
    u: inputs (B, L, D).
    delta: positive step sizes (B, L, D).
    a: negative state matrix diagonal (D, N).
    b, c: input-dependent projections (B, L, N).
    d: skip weights (D,).
    mask: (B, L), nonzero at real steps; masked steps are identity steps, output 0.
    chunk: time steps per rematerialised chunk (0: SCAN_CHUNK of the form that runs).
    method: 'auto', 'parallel' or 'sequential'.
  Returns:
    y: (B, L, D) in float32.
  """
  if method not in SCAN_METHODS:
    raise ValueError(f'selective scan method {method!r}: expected one of {SCAN_METHODS}')
  u, delta, b, c = (x.astype(jnp.float32) for x in (u, delta, b, c))
  if mask is not None:
    keep = (mask > 0)[..., None]
    delta = jnp.where(keep, delta, 0.0)  # exp(0 * a) = 1 and no input: the identity.
    u = jnp.where(keep, u, 0.0)
  a = a.astype(jnp.float32)
  h0 = jnp.zeros((u.shape[0], u.shape[2], a.shape[1]), jnp.float32)

  def parallel_chunk(h, u_c, delta_c, b_c, c_c):
    da = jnp.exp(delta_c[..., None] * a)  # (B, C, D, N)
    dbu = (delta_c * u_c)[..., None] * b_c[:, :, None, :]
    hs = _chunk_scan(da, dbu, h)
    return hs[:, -1], jnp.einsum('bcdn,bcn->bcd', hs, c_c)

  def parallel(*xs):
    return chunked_scan(xs, parallel_chunk, h0, chunk or SCAN_CHUNK['parallel'])

  def sequential(u, delta, b, c):
    steps = chunk or SCAN_CHUNK['sequential']
    return _sequential_selective_scan(u, delta, a, b, c, max(1, min(steps, u.shape[1])))

  xs = (u, delta, b, c)
  forms = {'parallel': parallel, 'sequential': sequential}
  if method == 'auto':
    y = jax.lax.platform_dependent(*xs, **{p: forms[m] for p, m in AUTO_SCAN.items()})
  else:
    y = forms[method](*xs)
  y = y + u * d.astype(jnp.float32)
  if mask is not None:
    y = jnp.where(keep, y, 0.0)
  return y


def hippo_n_diagonal(size: int, blocks: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues and eigenvectors of the block-diagonal HiPPO-N matrix (S5, section 4.1).

  HiPPO-N is the normal part of HiPPO-LegS, -1/2 I plus a skew-symmetric matrix, so it
  diagonalises stably with a unitary V. Returns (lambda (size,), V (size, size)).
  """
  if size % blocks:
    raise ValueError(f'state size {size} is not divisible by {blocks} blocks')
  n = size // blocks
  q = np.sqrt(2 * np.arange(n) + 1.0)
  legs = -(np.tril(np.outer(q, q)) - np.diag(np.arange(n)))
  p = np.sqrt(np.arange(n) + 0.5)
  normal = legs + np.outer(p, p)
  # -i * (skew part) is Hermitian: eigh gives the imaginary parts and a unitary V.
  imag, v = np.linalg.eigh(-1j * (normal - np.diag(np.diagonal(normal))))
  lam = np.mean(np.diagonal(normal)) + 1j * imag
  lams = np.tile(lam, blocks)
  big = np.zeros((size, size), np.complex128)
  for i in range(blocks):
    big[i * n:(i + 1) * n, i * n:(i + 1) * n] = v
  return lams, big


class S5(nn.Module):
  """The S5 layer: a MIMO diagonal SSM, (B, L, H) -> (B, L, H).

  HiPPO-N initialisation (diagonalised, `blocks` blocks), one learnable timestep
  per state, zero-order-hold discretisation, parallel scan. Conjugate symmetry keeps
  half of the `state_size` eigenvalues (the other half are their conjugates), so
  y = 2 Re(C h) + D u.
  """
  state_size: int = 64
  blocks: int = 1
  dt_min: float = 0.001
  dt_max: float = 0.1
  chunk: int = 1024

  @nn.compact
  def __call__(self, u: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    width = u.shape[-1]
    lam, v = hippo_n_diagonal(self.state_size, self.blocks)
    half = self.state_size // 2
    # eigh sorts each block's eigenvalues by imaginary part: keep one of each pair.
    n = self.state_size // self.blocks
    keep = np.concatenate([np.arange(i * n, i * n + n // 2) for i in range(self.blocks)])
    lam, v = lam[keep], v[:, keep]
    v_inv = v.conj().T
    lam_re = self.param('lambda_re', nn.with_logical_partitioning(
        lambda *_: jnp.asarray(lam.real, jnp.float32), ('state',)), (half,))
    lam_im = self.param('lambda_im', nn.with_logical_partitioning(
        lambda *_: jnp.asarray(lam.imag, jnp.float32), ('state',)), (half,))

    def b_init(key, shape):
      b = nn.initializers.lecun_normal()(key, (self.state_size, width))
      bt = jnp.asarray(v_inv, jnp.complex64) @ b.astype(jnp.complex64)
      return jnp.stack([jnp.real(bt), jnp.imag(bt)], -1).astype(jnp.float32)

    def c_init(key, shape):
      kr, ki = jax.random.split(key)
      c = (nn.initializers.lecun_normal()(kr, (width, self.state_size))
           + 1j * nn.initializers.lecun_normal()(ki, (width, self.state_size))) / np.sqrt(2)
      ct = c.astype(jnp.complex64) @ jnp.asarray(v, jnp.complex64)
      return jnp.stack([jnp.real(ct), jnp.imag(ct)], -1).astype(jnp.float32)

    b_ri = self.param('B', nn.with_logical_partitioning(b_init, ('state', 'embed', None)),
                      (half, width, 2))
    c_ri = self.param('C', nn.with_logical_partitioning(c_init, ('embed', 'state', None)),
                      (width, half, 2))
    d = self.param('D', nn.with_logical_partitioning(nn.initializers.normal(1.0), ('embed',)),
                   (width,))
    log_dt = self.param('log_step', nn.with_logical_partitioning(
        lambda key, shape: jax.random.uniform(key, shape, jnp.float32, math.log(self.dt_min),
                                              math.log(self.dt_max)), ('state',)), (half,))
    lam_c = jax.lax.complex(jnp.minimum(lam_re, -1e-4), lam_im)  # Keep the system stable.
    step = jnp.exp(log_dt)
    lam_bar = jnp.exp(lam_c * step)
    b_bar = ((lam_bar - 1) / lam_c)[:, None] * jax.lax.complex(b_ri[..., 0], b_ri[..., 1])
    c_c = jax.lax.complex(c_ri[..., 0], c_ri[..., 1])
    u = u.astype(jnp.float32)
    bu = jnp.einsum('ph,blh->blp', b_bar, u.astype(jnp.complex64))
    a = jnp.broadcast_to(lam_bar, bu.shape)
    if mask is not None:
      keep_t = (mask > 0)[..., None]
      a = jnp.where(keep_t, a, jnp.ones_like(a))
      bu = jnp.where(keep_t, bu, jnp.zeros_like(bu))
    h = linear_recurrence(a, bu, self.chunk)
    y = 2 * jnp.real(jnp.einsum('hp,blp->blh', c_c, h)) + d * u
    if mask is not None:
      y = jnp.where(keep_t, y, 0.0)
    return y


def _inverse_softplus(x):
  return x + jnp.log(-jnp.expm1(-x))


class SelectiveSSM(nn.Module):
  """The Mamba mixer, (B, L, D) -> (B, L, D): input projection to (x, z), short causal
  depthwise convolution, input-dependent step, B and C, selective scan, SiLU(z) gate,
  output projection. Sizes as the reference: expand 2, state 16, conv 4,
  dt_rank = ceil(D / 16), steps initialised in [0.001, 0.1], A = -(1..N) per channel.
  """
  state_size: int = 16
  conv_size: int = 4
  expand: int = 2
  dt_rank: int = 0  # 0: ceil(width / 16).
  dt_min: float = 0.001
  dt_max: float = 0.1
  chunk: int = 0  # 0: selective_scan's default for the form that runs.
  scan: str = 'auto'  # selective_scan's method.
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    width = x.shape[-1]
    inner = self.expand * width
    rank = self.dt_rank or math.ceil(width / 16)
    xz = dense(2 * inner, ('embed', 'mlp'), dtype=dtype, use_bias=False, name='in_proj')(x)
    xi, z = jnp.split(xz, 2, axis=-1)
    if mask is not None:
      xi = jnp.where((mask > 0)[..., None], xi, 0)
    xi = nn.with_logical_constraint(xi, ('batch', 'time', 'mlp'))
    kernel = self.param('conv_kernel', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(in_axis=0, out_axis=1), ('kernel', 'mlp')),
        (self.conv_size, inner))
    conv_bias = self.param('conv_bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('mlp',)), (inner,))
    # Causal depthwise conv: y_t = sum_k w_k x_{t-K+1+k} (a loop over the K taps only).
    padded = jnp.pad(xi, ((0, 0), (self.conv_size - 1, 0), (0, 0)))
    length = xi.shape[1]
    conv = sum(padded[:, k:k + length] * kernel[k].astype(dtype)
               for k in range(self.conv_size))
    xi = nn.silu(conv + conv_bias.astype(dtype))
    proj = dense(rank + 2 * self.state_size, ('mlp', None), dtype=dtype, use_bias=False,
                 name='x_proj')(xi)
    dt_low, b, c = jnp.split(proj, [rank, rank + self.state_size], axis=-1)

    def dt_bias_init(key, shape, dtype=jnp.float32):
      dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32, math.log(self.dt_min),
                                      math.log(self.dt_max)))
      return _inverse_softplus(jnp.maximum(dt, 1e-4))

    delta = nn.Dense(inner, dtype=dtype, name='dt_proj',
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
                         (None, 'mlp')),
                     bias_init=nn.with_logical_partitioning(dt_bias_init, ('mlp',)))(dt_low)
    delta = nn.softplus(delta.astype(jnp.float32))
    a_log = self.param('A_log', nn.with_logical_partitioning(
        lambda *_: jnp.log(jnp.tile(jnp.arange(1, self.state_size + 1, dtype=jnp.float32),
                                    (inner, 1))), ('mlp', 'state')),
        (inner, self.state_size))
    d = self.param('D', nn.with_logical_partitioning(nn.initializers.ones_init(), ('mlp',)),
                   (inner,))
    y = selective_scan(xi, delta, -jnp.exp(a_log), b, c, d, mask, self.chunk, self.scan)
    y = y.astype(dtype) * nn.silu(z)
    return dense(width, ('mlp', 'embed'), dtype=dtype, use_bias=False, name='out_proj')(y)


class SSMBlock(nn.Module):
  """Pre-norm residual block around an S5 or selective mixer.

  `kind`: 's5' (x + dropout(GLU(GELU(S5(LN x))))) as in the S5 paper's blocks, or
  'mamba' (x + Mixer(RMSNorm x)). `bidirectional` adds a second mixer that reads the
  flipped sequence; the two outputs are summed.
  """
  kind: str = 's5'
  bidirectional: bool = False
  state_size: int = 0  # 0: 64 for S5, 16 for the selective SSM.
  dropout: float = 0.0
  chunk: int = 0  # 0: the layer's default.
  dtype: str = 'float32'
  scan: str = 'auto'  # The selective scan's method (selective_scan); S5 has one.

  def _mixer(self, name):
    extra = {'chunk': self.chunk} if self.chunk else {}
    if self.kind == 's5':
      return S5(state_size=self.state_size or 64, name=name, **extra)
    if self.kind == 'mamba':
      return SelectiveSSM(state_size=self.state_size or 16, scan=self.scan, dtype=self.dtype,
                          name=name, **extra)
    raise ValueError(f'config.model.ssm: unknown {self.kind!r} (s5 | mamba)')

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    norm = (nn.LayerNorm if self.kind == 's5' else nn.RMSNorm)(name='norm')
    h = norm(x.astype(jnp.float32)).astype(dtype)
    y = self._mixer('forward')(h, mask)
    if self.bidirectional:
      y = y + jnp.flip(self._mixer('backward')(jnp.flip(h, 1), jnp.flip(mask, 1)), 1)
    if self.kind == 's5':
      y = nn.gelu(y)
      y = y * nn.sigmoid(dense(x.shape[-1], ('embed', 'hidden'), dtype=dtype,
                               name='glu')(y))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    out = x + y.astype(x.dtype)
    return jnp.where((mask > 0)[..., None], out, 0)


class SSMEncoder(nn.Module):
  """Input projection to `width`, `num_layers` SSM blocks, final norm; (B, L, D) -> (B, L, W)."""
  width: int
  num_layers: int = 2
  kind: str = 's5'
  bidirectional: bool = True
  state_size: int = 0
  dropout: float = 0.0
  chunk: int = 0
  dtype: str = 'float32'
  scan: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    x = dense(self.width, ('embed', 'hidden'), dtype=jnp.dtype(self.dtype),
              name='input')(x)
    for i in range(self.num_layers):
      x = SSMBlock(self.kind, self.bidirectional, self.state_size, self.dropout, self.chunk,
                   self.dtype, self.scan, name=f'block_{i}')(x, mask, train=train)
    x = nn.LayerNorm(name='norm')(x.astype(jnp.float32))
    return jnp.where((mask > 0)[..., None], x, 0)
