r"""Audio MAE pretraining step: affectjax versus a PyTorch mirror built as AudioMAE/HiCMAE build it.

  python -m pip install -e '.[bench]'
  python experiments/benchmarks/mae_speed.py --readme

The step: a log-mel batch (B, 200 frames, 64 bands; every frame real) cut into 4 x 16
patches (200 tokens), 80% of them hidden per example, the pre-norm ViT encoder on the 40
visible tokens, a light decoder over all 200 (mask tokens, fixed sin-cos positions), MSE
on the hidden patches against per-patch normalised targets, AdamW. affectjax runs its real
train step (`experiment.Experiment` on `configs/ravdess_audiomae.py`, one device); the mirror
is the same model written the way AudioMAE and HiCMAE write it (timm-style `Block`s: fused
qkv projection, `F.scaled_dot_product_attention`, GELU MLP; a strided Conv2d patch
embedding; `random_masking` by argsort of uniform noise; `ids_restore` to un-shuffle in the
decoder), in eager PyTorch and under `torch.compile`, on the same cores. The two sides have
the same parameter count (checked by tests/test_benchmarks.py).

Columns: training throughput (clips/s), step time, peak memory (growth of the process's
maximum RSS over the baseline before the first step, on CPU; peak device allocation on
GPU), and a compute floor: the affectjax step's FLOPs (XLA cost analysis of the compiled
step) at the best fp32 matrix-multiply rate measured in the same run on the model's own
GEMM shapes. Each configuration runs in its own process.

A second table isolates the decoder's self-attention (all patches, its width and heads):
forward + backward of `jax.nn.dot_product_attention`, of affectjax's
`layers.attention.dot_product_attention` (on CPU its hand-written backward) and of
PyTorch's `scaled_dot_product_attention`, each timed in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

REPO = harness.REPO
FRAMES, BANDS, PATCH, MASK_RATIO = 200, 64, (4, 16), 0.8
ROWS = (('tiny', 32), ('tiny', 128), ('small', 32), ('base', 16))
FRAMEWORKS = ('affectjax', 'torch', 'torch_compile')
ATTENTION = ('attention_jax', 'attention_affectjax', 'attention_torch')
START, END = '<!-- mae-speed:start -->', '<!-- mae-speed:end -->'


def _inputs(batch: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, FRAMES, BANDS)).astype(np.float32)


def _sizes(size: str):
  from affectjax.models import mae
  return mae.size_of(size)


def _config(size: str):
  from affectjax import config as config_lib
  return config_lib.load(os.path.join(REPO, 'configs', f'ravdess_audiomae.py:fold1,{size}'),
                         ['optim.schedule=constant', 'optim.grad_clip=0.0', 'mesh.data=-1',
                          'mesh.model=1'])


def affectjax_experiment(size: str):
  import jax
  from affectjax import sharding
  from affectjax import experiment
  config = _config(size)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  spec = {'audio': ((FRAMES, BANDS), np.float32), 'frame_mask': ((FRAMES,), np.float32)}
  return experiment.Experiment(config, mesh, spec, ('audio',)), mesh


def bench_affectjax(size: str, batch: int, steps: int, warmup: int) -> dict:
  from affectjax.data import pipeline
  exp, mesh = affectjax_experiment(size)
  arrays = pipeline.to_global({'audio': _inputs(batch), 'mask': np.ones(batch, np.float32),
                               'frame_mask': np.ones((batch, FRAMES), np.float32)},
                              mesh, exp.rules)
  out = harness.time_train_step(exp, arrays, batch, steps, warmup)
  return dict(out, clips_per_s=out.pop('examples_per_s'), params=exp.num_params)


# -- the PyTorch mirror ------------------------------------------------------------------------

def torch_mirror(size: str):
  """The audio MAE as AudioMAE/HiCMAE write it in PyTorch (timm-style blocks)."""
  import torch
  import torch.nn.functional as F
  from torch import nn
  width, depth, heads, d_width, d_depth, d_heads = _sizes(size)

  class Attention(nn.Module):
    def __init__(self, dim, num_heads):
      super().__init__()
      self.num_heads = num_heads
      self.qkv = nn.Linear(dim, 3 * dim)
      self.proj = nn.Linear(dim, dim)

    def forward(self, x):
      b, n, c = x.shape
      qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
      q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
      x = F.scaled_dot_product_attention(q, k, v)
      return self.proj(x.transpose(1, 2).reshape(b, n, c))

  class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
      self.attn = Attention(dim, num_heads)
      self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                               nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  def sincos_2d(grid, dim):
    from affectjax.layers.positions import sincos_positions
    return torch.from_numpy(np.array(sincos_positions(grid, dim), np.float32))[None]

  class AudioMAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.grid = (FRAMES // PATCH[0], BANDS // PATCH[1])
      self.patch_embed = nn.Conv2d(1, width, kernel_size=PATCH, stride=PATCH)
      self.register_buffer('pos', sincos_2d(self.grid, width), persistent=False)
      self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
      self.norm = nn.LayerNorm(width)
      self.decoder_embed = nn.Linear(width, d_width)
      self.mask_token = nn.Parameter(torch.zeros(1, 1, d_width).normal_(std=0.02))
      self.register_buffer('decoder_pos', sincos_2d(self.grid, d_width), persistent=False)
      self.decoder_blocks = nn.ModuleList([Block(d_width, d_heads) for _ in range(d_depth)])
      self.decoder_norm = nn.LayerNorm(d_width)
      self.decoder_pred = nn.Linear(d_width, PATCH[0] * PATCH[1])

    def patchify(self, spec):  # (B, T, F) -> (B, N, p0 * p1), row-major over (T, F).
      b = spec.shape[0]
      gt, gf = self.grid
      x = spec.reshape(b, gt, PATCH[0], gf, PATCH[1]).permute(0, 1, 3, 2, 4)
      return x.reshape(b, gt * gf, PATCH[0] * PATCH[1])

    def random_masking(self, x):
      b, n, d = x.shape
      keep = int(n * (1 - MASK_RATIO))
      ids_shuffle = torch.argsort(torch.rand(b, n, device=x.device), dim=1)
      ids_restore = torch.argsort(ids_shuffle, dim=1)
      ids_keep = ids_shuffle[:, :keep]
      x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
      mask = torch.ones(b, n, device=x.device)
      mask[:, :keep] = 0
      return x, torch.gather(mask, 1, ids_restore), ids_restore

    def forward(self, spec):
      x = self.patch_embed(spec[:, None]).flatten(2).transpose(1, 2) + self.pos
      x, mask, ids_restore = self.random_masking(x)
      for blk in self.blocks:
        x = blk(x)
      x = self.decoder_embed(self.norm(x))
      b, n = ids_restore.shape
      x = torch.cat([x, self.mask_token.expand(b, n - x.shape[1], -1)], dim=1)
      x = torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
      x = x + self.decoder_pos
      for blk in self.decoder_blocks:
        x = blk(x)
      pred = self.decoder_pred(self.decoder_norm(x))
      target = self.patchify(spec)
      mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True, unbiased=False)
      target = (target - mean) / (var + 1e-6) ** 0.5
      loss = ((pred - target) ** 2).mean(-1)
      return (loss * mask).sum() / mask.sum()

  return AudioMAE()


def bench_torch(size: str, batch: int, steps: int, warmup: int, compiled: bool) -> dict:
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = torch_mirror(size).to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
  forward = torch.compile(model) if compiled else model
  spec = torch.from_numpy(_inputs(batch)).to(device)
  base = harness.rss_mb()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = forward(spec)
    loss.backward()
    opt.step()
    return loss
  start = time.perf_counter()
  step().item()
  first_s = time.perf_counter() - start
  for _ in range(warmup):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  assert np.isfinite(loss.item())
  elapsed = time.perf_counter() - start
  peak = (torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else harness.rss_mb() - base)
  return {'step_ms': 1e3 * elapsed / steps, 'clips_per_s': batch * steps / elapsed,
          'compile_s': first_s, 'peak_mb': peak,
          'params': sum(p.numel() for p in model.parameters()), 'device': device}


def bench_attention(size: str, batch: int, framework: str, repeats: int = 10) -> dict:
  """Forward + backward of the decoder's self-attention over every patch, (B, N, H, D)."""
  _, _, _, d_width, _, d_heads = _sizes(size)
  tokens = (FRAMES // PATCH[0]) * (BANDS // PATCH[1])
  shape = (batch, tokens, d_heads, d_width // d_heads)
  rng = np.random.default_rng(0)
  q, k, v, w = (rng.normal(size=shape).astype(np.float32) for _ in range(4))
  if framework == 'attention_torch':
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(os.cpu_count() or 1)
    # SDPA takes (B, H, N, D).
    q, k, v, w = (torch.from_numpy(x).transpose(1, 2).contiguous() for x in (q, k, v, w))
    for x in (q, k, v):
      x.requires_grad_(True)

    def run():
      for x in (q, k, v):
        x.grad = None
      (F.scaled_dot_product_attention(q, k, v) * w).sum().backward()
      return q.grad
  else:
    import jax
    import jax.numpy as jnp
    from affectjax.layers import attention
    fn = {'attention_jax': jax.nn.dot_product_attention,
          'attention_affectjax': attention.dot_product_attention}[framework]
    q, k, v, w = (jnp.asarray(x) for x in (q, k, v, w))
    grad = jax.jit(jax.grad(lambda q, k, v: (fn(q, k, v) * w).sum(), argnums=(0, 1, 2)))

    def run():
      return jax.block_until_ready(grad(q, k, v))
  seconds = harness.best_seconds(run, repeats)
  # QK^T and PV forward, four products of the same size backward.
  flops = 6 * 2 * shape[0] * shape[2] * tokens * tokens * shape[3]
  return {'ms': 1e3 * seconds, 'gflops': flops / seconds / 1e9, 'shape': shape}


def bench_gemm(size: str, batch: int, repeats: int = 5) -> dict:
  """The best fp32 GEMM rate on the step's GEMMs: the encoder MLP over the visible tokens,
  the decoder MLP over all tokens, and a square 2048 product."""
  width, _, _, d_width, _, _ = _sizes(size)
  tokens = (FRAMES // PATCH[0]) * (BANDS // PATCH[1])
  visible = int(tokens * (1 - MASK_RATIO))
  return harness.gemm_rate([(batch * visible, width, 4 * width),
                            (batch * tokens, d_width, 4 * d_width), (2048, 2048, 2048)],
                           repeats)


# -- driver ------------------------------------------------------------------------------------

def _worker(args) -> None:
  if args.framework == 'gemm':
    harness.report(bench_gemm(args.size, args.batch))
  elif args.framework in ATTENTION:
    harness.report(bench_attention(args.size, args.batch, args.framework))
  elif args.framework == 'affectjax':
    harness.report(bench_affectjax(args.size, args.batch, args.steps, args.warmup))
  else:
    harness.report(bench_torch(args.size, args.batch, args.steps, args.warmup,
                               args.framework == 'torch_compile'))


def _measure(framework: str, size: str, batch: int, steps: int, warmup: int) -> dict:
  return harness.measure(__file__, ['--framework', framework, '--size', size, '--batch',
                                    str(batch), '--steps', str(steps), '--warmup', str(warmup)])


def table(rows: list[dict], rate_gflops: float) -> str:
  lines = ['| size | batch | parameters | affectjax clips/s | affectjax step ms | affectjax '
           'compile s | affectjax peak MiB | torch clips/s | torch peak MiB | '
           'torch_compile clips/s | torch_compile peak MiB | affectjax / torch | '
           'affectjax / torch_compile | step GFLOP | compute floor ms | affectjax step / floor |',
           '|' + '---|' * 16]

  def get(r, key, fmt):
    return fmt.format(r[key]) if key in r else r.get('error', '')[:50]

  def ratio(a, b):
    return f"{a['clips_per_s'] / b['clips_per_s']:.2f}x" if (
        'clips_per_s' in a and 'clips_per_s' in b) else ''
  for r in rows:
    jx, pt, pc = r['affectjax'], r['torch'], r['torch_compile']
    floor = 1e3 * jx['gflop'] / rate_gflops if 'gflop' in jx and rate_gflops else None
    over = f"{jx['step_ms'] / floor:.2f}x" if floor else ''
    lines.append(
        f"| {r['size']} | {r['batch']} | {get(jx, 'params', '{:,}')} | "
        f"{get(jx, 'clips_per_s', '{:,.0f}')} | {get(jx, 'step_ms', '{:.1f}')} | "
        f"{get(jx, 'compile_s', '{:.1f}')} | {get(jx, 'peak_mb', '{:.0f}')} | "
        f"{get(pt, 'clips_per_s', '{:,.0f}')} | {get(pt, 'peak_mb', '{:.0f}')} | "
        f"{get(pc, 'clips_per_s', '{:,.0f}')} | {get(pc, 'peak_mb', '{:.0f}')} | "
        f"{ratio(jx, pt)} | {ratio(jx, pc)} | {get(jx, 'gflop', '{:.1f}')} | "
        f"{'' if floor is None else f'{floor:.1f}'} | "
        f"{over} |")
  return '\n'.join(lines)


def attention_table(rows: list[dict]) -> str:
  lines = ['| size | (B, N, H, D) | jax.nn.dot_product_attention ms | affectjax ms | '
           'torch SDPA ms | affectjax GFLOP/s | affectjax speed-up over jax.nn | '
           'affectjax / torch (time) |', '|' + '---|' * 8]
  for r in rows:
    jx, ours, pt = (r['attention'].get(f) or {} for f in ATTENTION)
    if 'ms' not in ours:
      lines.append(f"| {r['size']} | | | {ours.get('error', '')[:60]} | | | | |")
      continue
    cell = lambda d: f"{d['ms']:.1f}" if 'ms' in d else d.get('error', '')[:40]  # noqa: E731
    speed = f"{jx['ms'] / ours['ms']:.2f}x" if 'ms' in jx else ''
    vs = f"{ours['ms'] / pt['ms']:.2f}x" if 'ms' in pt else ''
    lines.append(f"| {r['size']} | {tuple(ours['shape'])} | {cell(jx)} | {cell(ours)} | "
                 f"{cell(pt)} | {ours['gflops']:.0f} | {speed} | {vs} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--framework', default='affectjax')
  p.add_argument('--size', default='tiny')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--rows', default=','.join(f'{s}:{b}' for s, b in ROWS),
                 help='size:batch pairs, comma-separated')
  p.add_argument('--steps', type=int, default=10, help='timed steps (fewer for big rows)')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--readme', action='store_true',
                 help='write the table into experiments/benchmarks/README.md')
  args = p.parse_args(argv)
  if args.worker:
    _worker(args)
    return 0
  start = time.time()
  pairs = [(s, int(b)) for s, b in (x.split(':') for x in args.rows.split(','))]
  rows, rates = [], {}
  for size, batch in pairs:
    gemm = _measure('gemm', size, batch, 0, 0)
    rates[size, batch] = gemm.get('gflops', 0.0)
    steps = max(3, args.steps * 32 // batch if size == 'tiny' else 3)
    row = {'size': size, 'batch': batch}
    for framework in FRAMEWORKS:
      row[framework] = _measure(framework, size, batch, steps, args.warmup)
    row['attention'] = {f: _measure(f, size, batch, 0, 0) for f in ATTENTION}
    rows.append(row)
    print(json.dumps(row), flush=True)
  rate = max(rates.values() or [0.0])
  import jax
  from affectjax import hardware
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = 'not installed'
  device = rows[0]['affectjax'].get('device', 'cpu') if rows else 'cpu'
  section = f"""{START}
Generated by `python experiments/benchmarks/mae_speed.py --readme` in
{(time.time() - start) / 60:.1f} min on {hardware.cpu_name()} ({os.cpu_count()} cores), device
{device}; jax {jax.__version__}, torch {torch_version}; fp32. Log-mel input {FRAMES} x {BANDS},
patches {PATCH[0]} x {PATCH[1]} ({(FRAMES // PATCH[0]) * (BANDS // PATCH[1])} tokens), {MASK_RATIO:.0%}
hidden; AdamW. Best fp32 GEMM rate measured in this run on the model's GEMM shapes:
{rate:.0f} GFLOP/s; compute floor = the affectjax step's FLOPs at that rate.

{table(rows, rate)}

Decoder self-attention alone, forward + backward (best of 10; the step's sizes and batches;
affectjax's CPU form is the one its steps above run):

{attention_table(rows)}
{END}"""
  print(section)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(os.path.join(HERE, 'README.md'), section, START, END,
                            'Audio MAE pretraining step: affectjax vs a PyTorch '
                            'AudioMAE-style mirror\n\nSee `mae_speed.py`\'s docstring for what '
                            'each side runs.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
