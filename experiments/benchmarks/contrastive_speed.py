r"""Contrastive loss and pretraining step: affectjax versus a PyTorch mirror of open_clip.

  python experiments/benchmarks/contrastive_speed.py --readme

Rows of the global batch N from 256 to 32,768, embeddings of width 128:
- loss: value and gradient of the symmetric InfoNCE loss with respect to both embedding
  matrices. affectjax on 8 virtual CPU devices (batch split over `data`), in the global
  form (`losses.clip_loss` under jit: XLA places the N x N logits) and the memory-lean
  shard_map form (`losses.sharded`: each device scores its N/8 rows against all N
  columns); the mirror is open_clip's `ClipLoss` as a single-process user runs it
  (world size 1: `logits_per_image = scale * image @ text.T`, its transpose, cross-entropy
  with arange labels, mean of both), eager PyTorch on the same CPU.
- step: a whole pretraining step, two MLP towers (256 -> 256 -> GELU -> 256, projection to
  128, L2 normalisation) with a learnt logit scale, InfoNCE, AdamW: affectjax's real train
  step (`experiment.Experiment`, `models/contrastive.py`, shard_map loss) against the same
  towers and `ClipLoss` in PyTorch.

Memory: affectjax's compiled per-device peak (XLA memory analysis of the compiled step:
arguments + outputs + temporaries - aliased); PyTorch's growth of the process's maximum
RSS over the baseline before the first step (the mirror runs in one process on one
device). Each configuration runs in its own process. "largest N within budget" is the
largest measured N whose peak stays within the budget. Compute floor: the loss's
essential FLOPs (forward 2 N^2 D for the logits, backward twice that) at the best
matrix-multiply rate measured in the same run.
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
WIDTH = 128
TOWER_IN, TOWER_HIDDEN = 256, 256
BATCHES = (256, 1024, 4096, 16384, 32768)
BUDGET_MB = 2048
START, END = '<!-- contrastive_speed:start -->', '<!-- contrastive_speed:end -->'


def _inputs(n: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  b /= np.linalg.norm(b, axis=1, keepdims=True)
  return a, b


def _time(fn, steps: int) -> float:
  fn()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - start) / steps


# -- affectjax -----------------------------------------------------------------------------

def _peak_mb(compiled) -> float:
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
          m.alias_size_in_bytes) / 2**20


def bench_jax_loss(n: int, form: str, steps: int) -> dict:
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from affectjax import losses
  from affectjax import sharding
  mesh = sharding.make_mesh({'data': -1, 'model': 1})
  rows = NamedSharding(mesh, P('data'))
  loss = losses.clip_loss if form == 'global' else losses.sharded(losses.clip_loss, mesh,
                                                                  'data')
  fn = jax.jit(jax.value_and_grad(lambda a, b, m: loss(a, b, 10.0, m), argnums=(0, 1)))
  a, b = _inputs(n, WIDTH)
  with jax.set_mesh(mesh):
    args = [jax.device_put(x, rows) for x in (a, b, np.ones(n, np.float32))]
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    seconds = _time(lambda: jax.block_until_ready(compiled(*args)), steps)
  return {'step_ms': 1e3 * seconds, 'rows_per_s': n / seconds, 'peak_mb': _peak_mb(compiled),
          'compile_s': compile_s, 'devices': jax.device_count()}


def bench_jax_step(n: int, steps: int) -> dict:
  import jax
  import ml_collections
  from affectjax import config as config_lib
  from affectjax import sharding
  from affectjax import experiment
  from affectjax.data import pipeline
  c = config_lib.base_config()
  tower = {'kind': 'mlp', 'width': TOWER_HIDDEN, 'num_layers': 2, 'dropout': 0.0}
  with c.unlocked():
    c.data.modalities = ('audio', 'face')
    c.task = ml_collections.ConfigDict({'name': 'contrastive', 'loss': 'infonce',
                                        'lean': True})
    c.model = ml_collections.ConfigDict({'name': 'contrastive.ContrastiveModel',
                                         'towers': {'audio': tower, 'face': tower},
                                         'embed_dim': WIDTH})
    c.optim.schedule, c.optim.grad_clip = 'constant', 0.0
  mesh = sharding.make_mesh(c.mesh)
  spec = {'audio': ((TOWER_IN,), np.float32), 'face': ((TOWER_IN,), np.float32)}
  exp = experiment.Experiment(c, mesh, spec, ('audio', 'face'))
  a, b = _inputs(n, TOWER_IN)
  batch = pipeline.to_global({'audio': a, 'face': b, 'mask': np.ones(n, np.float32)}, mesh,
                             exp.rules)
  start = time.perf_counter()
  step = exp.lower_train_step(n).compile()
  compile_s = time.perf_counter() - start
  state = [exp.lower_init().compile()(jax.random.PRNGKey(0))]

  def run():
    state[0], m = step(state[0], batch)
    jax.block_until_ready(m['loss'])
  seconds = _time(run, steps)
  return {'step_ms': 1e3 * seconds, 'rows_per_s': n / seconds, 'peak_mb': _peak_mb(step),
          'compile_s': compile_s, 'devices': jax.device_count()}


# -- the PyTorch mirror ----------------------------------------------------------------------

def _clip_loss_torch():
  import torch
  import torch.nn.functional as F

  class ClipLoss(torch.nn.Module):
    """open_clip's ClipLoss at world size 1: all-pairs logits in one process."""

    def forward(self, image, text, logit_scale):
      logits_per_image = logit_scale * image @ text.T
      logits_per_text = logit_scale * text @ image.T
      labels = torch.arange(image.shape[0], device=image.device, dtype=torch.long)
      return (F.cross_entropy(logits_per_image, labels) +
              F.cross_entropy(logits_per_text, labels)) / 2
  return ClipLoss()


def bench_torch_loss(n: int, steps: int) -> dict:
  import torch
  torch.set_num_threads(os.cpu_count())
  loss_fn = _clip_loss_torch()
  a, b = (torch.from_numpy(x).requires_grad_() for x in _inputs(n, WIDTH))
  scale = torch.tensor(10.0)
  base = harness.rss_mb()

  def run():
    a.grad = b.grad = None
    loss_fn(a, b, scale).backward()
  seconds = _time(run, steps)
  return {'step_ms': 1e3 * seconds, 'rows_per_s': n / seconds, 'peak_mb': harness.rss_mb() - base}


def bench_torch_step(n: int, steps: int) -> dict:
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  loss_fn = _clip_loss_torch()

  def tower():
    return torch.nn.Sequential(torch.nn.Linear(TOWER_IN, TOWER_HIDDEN), torch.nn.GELU(),
                               torch.nn.LayerNorm(TOWER_HIDDEN),
                               torch.nn.Linear(TOWER_HIDDEN, TOWER_HIDDEN), torch.nn.GELU(),
                               torch.nn.Linear(TOWER_HIDDEN, WIDTH))
  towers = torch.nn.ModuleList([tower(), tower()])
  log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
  opt = torch.optim.AdamW([*towers.parameters(), log_scale], lr=1e-3, weight_decay=1e-4)
  a, b = (torch.from_numpy(x) for x in _inputs(n, TOWER_IN))
  base = harness.rss_mb()

  def run():
    opt.zero_grad(set_to_none=True)
    za = torch.nn.functional.normalize(towers[0](a), dim=-1)
    zb = torch.nn.functional.normalize(towers[1](b), dim=-1)
    loss_fn(za, zb, log_scale.exp().clamp(max=100)).backward()
    opt.step()
  seconds = _time(run, steps)
  return {'step_ms': 1e3 * seconds, 'rows_per_s': n / seconds, 'peak_mb': harness.rss_mb() - base}


def bench_gemm() -> dict:
  """Best sustained fp32 GEMM rate (GFLOP/s) of jax and torch on the loss's shape."""
  import jax
  import torch
  n = 4096
  a, b = _inputs(n, WIDTH)
  x = jax.device_put(a, jax.devices()[0])
  y = jax.device_put(b, jax.devices()[0])
  f = jax.jit(lambda p, q: p @ q.T)
  jt = _time(lambda: jax.block_until_ready(f(x, y)), 10)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  tt = _time(lambda: ta @ tb.T, 10)
  flops = 2 * n * n * WIDTH
  return {'jax': flops / jt / 1e9, 'torch': flops / tt / 1e9}


# -- driver ---------------------------------------------------------------------------------

def _worker(args) -> None:
  steps = max(2, min(10, int(10 * 4096 / max(args.batch, 1))))
  if args.what == 'gemm':
    out = bench_gemm()
  elif args.what == 'jax_loss':
    out = bench_jax_loss(args.batch, args.form, steps)
  elif args.what == 'jax_step':
    out = bench_jax_step(args.batch, steps)
  elif args.what == 'torch_loss':
    out = bench_torch_loss(args.batch, steps)
  else:
    out = bench_torch_step(args.batch, steps)
  harness.report(out)


def _measure(what: str, batch: int, form: str = '', devices: int = 8) -> dict:
  return harness.measure(__file__, ['--what', what, '--batch', str(batch), '--form',
                                    form or 'lean'],
                         env={'JAX_PLATFORMS': 'cpu',
                              'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'})


def _fits_torch(n: int, memory_mb: float) -> bool:
  # Two N x N float32 logits, their softmax and gradients: about 6 N^2 * 4 bytes.
  return 6 * n * n * 4 / 2**20 < 0.6 * memory_mb


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--what', default='')
  p.add_argument('--form', default='lean')
  p.add_argument('--batch', type=int, default=0)
  p.add_argument('--batches', default=','.join(map(str, BATCHES)))
  p.add_argument('--readme', action='store_true',
                 help='write the tables into experiments/benchmarks/README.md')
  args = p.parse_args(argv)
  if args.worker:
    _worker(args)
    return 0
  start = time.time()
  batches = [int(b) for b in args.batches.split(',')]
  memory_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**20
  gemm = _measure('gemm', 0, devices=1)
  rate = max(gemm.get('jax', 0), gemm.get('torch', 0)) * 1e9
  rows = []
  for n in batches:
    row = {'n': n, 'lean': _measure('jax_loss', n, 'lean'),
           'global': _measure('jax_loss', n, 'global'),
           'jax_step': _measure('jax_step', n)}
    skip = {'error': f'not run: about {6 * n * n * 4 / 2**30:.0f} GiB of logits'}
    row['torch'] = _measure('torch_loss', n) if _fits_torch(n, memory_mb) else skip
    row['torch_step'] = _measure('torch_step', n) if _fits_torch(n, memory_mb) else skip
    row['floor_ms'] = 1e3 * 6 * n * n * WIDTH / rate if rate else float('nan')
    rows.append(row)
    print(json.dumps(row), flush=True)

  def cell(r, key, fmt='{:.0f}'):
    return fmt.format(r[key]) if key in r else r.get('error', '')[:60]

  def ratio(a, b, key):
    return f'{a[key] / b[key]:.2f}x' if key in a and key in b and b[key] else ''
  lines = ['| N | lean rows/s | global rows/s | mirror rows/s | lean / mirror | '
           'lean MB/device | global MB/device | mirror MB | compute floor ms | lean ms |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['n']} | {cell(r['lean'], 'rows_per_s')} | "
                 f"{cell(r['global'], 'rows_per_s')} | {cell(r['torch'], 'rows_per_s')} | "
                 f"{ratio(r['lean'], r['torch'], 'rows_per_s')} | "
                 f"{cell(r['lean'], 'peak_mb', '{:.1f}')} | "
                 f"{cell(r['global'], 'peak_mb', '{:.1f}')} | "
                 f"{cell(r['torch'], 'peak_mb', '{:.1f}')} | {r['floor_ms']:.2f} | "
                 f"{cell(r['lean'], 'step_ms', '{:.2f}')} |")
  loss_table = '\n'.join(lines)
  lines = ['| N | affectjax step rows/s | mirror step rows/s | affectjax / mirror | '
           'affectjax MB/device | mirror MB |', '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['n']} | {cell(r['jax_step'], 'rows_per_s')} | "
                 f"{cell(r['torch_step'], 'rows_per_s')} | "
                 f"{ratio(r['jax_step'], r['torch_step'], 'rows_per_s')} | "
                 f"{cell(r['jax_step'], 'peak_mb', '{:.1f}')} | "
                 f"{cell(r['torch_step'], 'peak_mb', '{:.1f}')} |")
  step_table = '\n'.join(lines)

  def largest(key):
    ok = [r['n'] for r in rows if 'peak_mb' in r[key] and r[key]['peak_mb'] <= BUDGET_MB]
    return max(ok) if ok else 'none measured'
  fits = (f'Largest measured N within {BUDGET_MB} MB (per device for affectjax, the process '
          f"for the mirror): lean loss {largest('lean')}, global loss {largest('global')}, "
          f"mirror loss {largest('torch')}; pretraining step: affectjax "
          f"{largest('jax_step')}, mirror {largest('torch_step')}.")
  import jax
  import torch
  from affectjax import hardware
  section = f"""{START}
Generated by `python experiments/benchmarks/contrastive_speed.py --readme` in
{(time.time() - start) / 60:.1f} min on {hardware.cpu_name()} ({os.cpu_count()} cores; affectjax on
8 virtual CPU devices, the mirror on the same cores); jax {jax.__version__}, torch
{torch.__version__}. Best fp32 GEMM rate measured in this run: {rate / 1e9:.0f} GFLOP/s
(jax {gemm.get('jax', 0):.0f}, torch {gemm.get('torch', 0):.0f}); compute floor = 6 N^2 x {WIDTH}
FLOPs at that rate.

Loss (value and gradients, width {WIDTH}):

{loss_table}

Pretraining step (two MLP towers {TOWER_IN} -> {TOWER_HIDDEN} -> {WIDTH}, InfoNCE, AdamW):

{step_table}

{fits}
{END}"""
  print(section)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(
        os.path.join(HERE, 'README.md'), section, START, END,
        "Contrastive loss: affectjax vs a PyTorch mirror of open_clip's ClipLoss\n\n"
        "See `contrastive_speed.py`'s docstring for what each side runs.")
  return 0


if __name__ == '__main__':
  sys.exit(main())
