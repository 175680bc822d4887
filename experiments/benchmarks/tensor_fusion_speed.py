r"""Training speed of TFN and LMF: affectjax against PyTorch mirrors of the MMSA design.

  python -m pip install -e '.[bench]'     # PyTorch: a benchmark-only extra
  python experiments/benchmarks/tensor_fusion_speed.py

The PyTorch models below mirror the MMSA toolkit's TFN and LMF at its MOSI settings
(written here from the papers and the toolkit's documented design, not copied):
text (B, 50, 768) through a one-layer LSTM subnetwork (final hidden state, dropout,
linear), time-averaged audio (B, 5) and vision (B, 20) through MLP subnetworks
(BatchNorm, dropout, three Linear+ReLU); TFN hidden 128/32/128 (text/audio/vision),
text out 32, post-fusion 64, dropouts 0.3/0.3/0.3/0.5, sigmoid-scaled output;
LMF hidden 128/16/128, text out 64, rank 3. Adam, L1 loss. affectjax runs its own
TFN/LMF (same sizes; its MLP subnetworks have no BatchNorm) through the real
jitted train step of `affectjax.experiment.Experiment`.

Every (framework, model, batch size) is measured in a fresh subprocess, so peak
memory is that configuration's own; all of them are run side by side in one
invocation and printed as ratios. Inputs are random tensors already in memory on
both sides (no input pipeline). Uses a GPU when there is one. With --readme the
table replaces the marked section of experiments/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from affectjax import hardware

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

REPO = harness.REPO
SEQ, TEXT_DIM, AUDIO_DIM, VISION_DIM = 50, 768, 5, 20
SIZES = {
    'tfn': dict(hidden=(128, 32, 128), text_out=32, post_fusion=64,
                dropouts=(0.3, 0.3, 0.3, 0.5)),
    'lmf': dict(hidden=(128, 16, 128), text_out=64, rank=3, dropouts=(0.3, 0.3, 0.3, 0.5)),
}
START, END = '<!-- tensor-fusion-speed:start -->', '<!-- tensor-fusion-speed:end -->'


def _inputs(batch: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, SEQ, TEXT_DIM)).astype(np.float32),
          rng.normal(size=(batch, AUDIO_DIM)).astype(np.float32),
          rng.normal(size=(batch, VISION_DIM)).astype(np.float32),
          rng.uniform(-3, 3, size=(batch,)).astype(np.float32))


# -- PyTorch mirror -----------------------------------------------------------------------


def _torch_models():
  import torch
  from torch import nn

  class MLPSubnet(nn.Module):
    def __init__(self, d_in, hidden, p):
      super().__init__()
      self.net = nn.Sequential(nn.BatchNorm1d(d_in), nn.Dropout(p),
                               nn.Linear(d_in, hidden), nn.ReLU(),
                               nn.Linear(hidden, hidden), nn.ReLU(),
                               nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x):
      return self.net(x)

  class LSTMSubnet(nn.Module):
    def __init__(self, d_in, hidden, out, p):
      super().__init__()
      self.rnn = nn.LSTM(d_in, hidden, batch_first=True)
      self.drop = nn.Dropout(p)
      self.proj = nn.Linear(hidden, out)

    def forward(self, x):
      _, (h, _) = self.rnn(x)
      return self.proj(self.drop(h[-1]))

  def with_one(h):
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], 1)

  class TFN(nn.Module):
    def __init__(self, s):
      super().__init__()
      th, ah, vh = s['hidden']
      pa, pv, pt, pf = s['dropouts']
      self.text = LSTMSubnet(TEXT_DIM, th, s['text_out'], pt)
      self.audio = MLPSubnet(AUDIO_DIM, ah, pa)
      self.vision = MLPSubnet(VISION_DIM, vh, pv)
      self.drop = nn.Dropout(pf)
      fused = (s['text_out'] + 1) * (ah + 1) * (vh + 1)
      self.post = nn.Sequential(nn.Linear(fused, s['post_fusion']), nn.ReLU(),
                                nn.Linear(s['post_fusion'], s['post_fusion']), nn.ReLU(),
                                nn.Linear(s['post_fusion'], 1))

    def forward(self, t, a, v):
      ht, ha, hv = with_one(self.text(t)), with_one(self.audio(a)), with_one(self.vision(v))
      z = torch.einsum('bi,bj->bij', ht, ha).reshape(t.shape[0], -1)
      z = torch.einsum('bi,bj->bij', z, hv).reshape(t.shape[0], -1)
      return torch.sigmoid(self.post(self.drop(z))) * 6 - 3

  class LMF(nn.Module):
    def __init__(self, s):
      super().__init__()
      th, ah, vh = s['hidden']
      pa, pv, pt, _ = s['dropouts']
      r = s['rank']
      self.text = LSTMSubnet(TEXT_DIM, th, s['text_out'], pt)
      self.audio = MLPSubnet(AUDIO_DIM, ah, pa)
      self.vision = MLPSubnet(VISION_DIM, vh, pv)
      self.factors = nn.ParameterList([
          nn.Parameter(nn.init.xavier_normal_(torch.empty(r, d + 1, 1)))
          for d in (s['text_out'], ah, vh)])
      self.weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, r)))
      self.bias = nn.Parameter(torch.zeros(1, 1))

    def forward(self, t, a, v):
      hs = [with_one(self.text(t)), with_one(self.audio(a)), with_one(self.vision(v))]
      prod = None
      for h, f in zip(hs, self.factors):
        term = torch.matmul(h, f)  # (R, B, 1)
        prod = term if prod is None else prod * term
      return (torch.matmul(self.weights, prod.permute(1, 0, 2)).squeeze(1) + self.bias)

  return {'tfn': TFN, 'lmf': LMF}


def bench_torch(model_name: str, batch: int, steps: int, warmup: int, compiled: bool) -> dict:
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = _torch_models()[model_name](SIZES[model_name]).to(device).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  t, a, v, y = [torch.from_numpy(x).to(device) for x in _inputs(batch)]
  y = y[:, None]

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.l1_loss(model(t, a, v), y)
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(step) if compiled else step
  base = harness.rss_mb()
  if device == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  start = time.perf_counter()
  fn()
  sync()
  first = time.perf_counter() - start
  for _ in range(warmup):
    fn()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    loss = fn()
  sync()
  elapsed = time.perf_counter() - start
  assert np.isfinite(float(loss))
  peak = (torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda'
          else harness.rss_mb() - base)
  return {'step_ms': 1e3 * elapsed / steps, 'examples_per_s': batch * steps / elapsed,
          'compile_s': first, 'peak_mb': peak, 'device': device}


# -- affectjax ---------------------------------------------------------------------------------


def bench_affectjax(model_name: str, batch: int, steps: int, warmup: int,
                    dtype: str = 'float32', rng_bits: int = 32) -> dict:
  from affectjax import config as config_lib
  from affectjax import sharding
  from affectjax import experiment
  from affectjax.data import pipeline

  s = SIZES[model_name]
  th, ah, vh = s['hidden']
  pa, pv, pt, pf = s['dropouts']
  common = [f'model.hidden={{"text": {th}, "audio": {ah}, "vision": {vh}}}',
            f'model.dropouts={{"text": {pt}, "audio": {pa}, "vision": {pv}}}',
            f'model.lstm_out={{"text": {s["text_out"]}}}', 'model.subnet_depth=3',
            f'model.dtype={dtype}', f'model.dropout_rng_bits={rng_bits}', 'optim.name=adam', 'optim.schedule=constant',
            'optim.grad_clip=0.0', 'mesh.data=-1', 'mesh.model=1']
  if model_name == 'tfn':
    extra = [f'model.post_fusion_dim={s["post_fusion"]}', f'model.post_fusion_dropout={pf}',
             'model.output_range=6.0']
  else:
    extra = [f'model.rank={s["rank"]}', 'model.fusion_dim=1']
  config = config_lib.load(os.path.join(REPO, 'configs', f'mosi.py:{model_name}'),
                           common + extra)
  spec = {'text': ((SEQ, TEXT_DIM), np.float32), 'audio': ((AUDIO_DIM,), np.float32),
          'vision': ((VISION_DIM,), np.float32), 'label': ((), np.float32)}
  mesh = sharding.make_mesh(config.mesh)
  exp = experiment.Experiment(config, mesh, spec, ('text', 'audio', 'vision'))
  t, a, v, y = _inputs(batch)
  batch_arrays = pipeline.to_global(
      {'text': t, 'audio': a, 'vision': v, 'label': y, 'mask': np.ones(batch, np.float32)},
      mesh, exp.rules)
  return harness.time_train_step(exp, batch_arrays, batch, steps, warmup)


def bench_gemm(repeats: int = 10) -> dict:
  """The machine's sustained fp32 matrix-multiply rate, best of jax and torch.

  Shapes are the GEMMs that dominate both models' steps: the LSTM input projection at
  batch 256 (forward, (12800, 768) x (768, 512)) and its weight gradient
  ((768, 12800) x (12800, 512)), plus a square 2048 product. The best rate over shapes and
  frameworks is an upper bound on what any implementation reaches on these steps.
  """
  return harness.gemm_rate([(12800, 768, 512), (768, 12800, 512), (2048, 2048, 2048)],
                           repeats)


# -- driver ------------------------------------------------------------------------------------

FRAMEWORKS = ('affectjax', 'torch', 'torch_compile')


def _worker(args) -> None:
  if args.framework == 'gemm':
    out = bench_gemm()
  elif args.framework == 'affectjax':
    out = bench_affectjax(args.model, args.batch, args.steps, args.warmup, args.dtype,
                          args.dropout_rng_bits)
  else:
    out = bench_torch(args.model, args.batch, args.steps, args.warmup,
                      args.framework == 'torch_compile')
  harness.report(out)


def _measure(framework, model, batch, args) -> dict:
  steps = max(3, min(args.steps, int(args.steps * 256 / batch) or 3))
  return harness.measure(__file__, [
      '--framework', framework, '--model', model, '--batch', str(batch), '--steps',
      str(steps), '--warmup', str(args.warmup), '--dtype', args.dtype,
      '--dropout-rng-bits', str(args.dropout_rng_bits)])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--framework', choices=FRAMEWORKS + ('gemm',), default='affectjax')
  p.add_argument('--model', choices=tuple(SIZES), default='tfn')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--models', default='tfn,lmf')
  p.add_argument('--batch-sizes', default='32,256,1024,4096')
  p.add_argument('--frameworks', default=','.join(FRAMEWORKS))
  p.add_argument('--steps', type=int, default=20, help='timed steps at batch 256 '
                 '(scaled inversely with batch size, at least 3)')
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--dtype', default='float32', help='affectjax compute dtype (bfloat16 on GPU)')
  p.add_argument('--dropout-rng-bits', type=int, default=8,
                 help="affectjax dropout masks: 8 (ByteDropout) or 32 (Flax's)")
  p.add_argument('--readme', action='store_true',
                 help='write the table into experiments/benchmarks/README.md')
  args = p.parse_args(argv)
  if args.worker:
    _worker(args)
    return 0
  frameworks = args.frameworks.split(',')
  rows = []
  start = time.time()
  gemm = _measure('gemm', 'tfn', 256, args)
  print('gemm', json.dumps(gemm), flush=True)
  for model in args.models.split(','):
    for batch in [int(b) for b in args.batch_sizes.split(',')]:
      res = {fw: _measure(fw, model, batch, args) for fw in frameworks}
      rows.append((model, batch, res))
      print(model, batch, json.dumps(res), flush=True)
  wall = time.time() - start

  def cell(r, key, fmt):
    return fmt.format(r[key]) if 'error' not in r else 'failed'

  header = ['model', 'batch']
  for fw in frameworks:
    header += [f'{fw} ex/s', f'{fw} step ms', f'{fw} first step / compile s',
               f'{fw} peak MiB']
  ratios = [f'affectjax / {fw} throughput' for fw in frameworks if fw != 'affectjax']
  bound = 'error' not in gemm and 'affectjax' in frameworks and 'torch' in frameworks
  if bound:
    ratios += ['step GFLOP', 'compute floor ms', 'largest possible / torch']
  lines = ['| ' + ' | '.join(header + ratios) + ' |', '|' + '---|' * (len(header) + len(ratios))]
  for model, batch, res in rows:
    cells = [model.upper(), str(batch)]
    for fw in frameworks:
      r = res[fw]
      cells += [cell(r, 'examples_per_s', '{:,.0f}'), cell(r, 'step_ms', '{:.1f}'),
                cell(r, 'compile_s', '{:.1f}'), cell(r, 'peak_mb', '{:.0f}')]
    for fw in frameworks:
      if fw == 'affectjax':
        continue
      a, b = res.get('affectjax', {}), res[fw]
      ok = 'error' not in a and 'error' not in b
      cells.append(f'{a["examples_per_s"] / b["examples_per_s"]:.2f}x' if ok else 'n/a')
    if bound:
      a, t = res['affectjax'], res['torch']
      if 'error' in a or 'error' in t or not a.get('gflop'):
        cells += ['n/a'] * 3
      else:
        floor_ms = 1e3 * a['gflop'] / gemm['gflops']
        cells += [f'{a["gflop"]:.2f}', f'{floor_ms:.1f}', f'{t["step_ms"] / floor_ms:.2f}x']
    lines.append('| ' + ' | '.join(cells) + ' |')
  errors = [f'- {m} batch {b} {fw}: {r["error"]}' for m, b, res in rows
            for fw, r in res.items() if 'error' in r]
  devices = {r.get('device') for _, _, res in rows for r in res.values() if 'device' in r}
  import jax
  import torch
  note = (f'Hardware: {hardware.cpu_name()}, {os.cpu_count()} cores; device(s) used: '
          f'{", ".join(sorted(devices))}; jax {jax.__version__}, torch {torch.__version__}; '
          f'affectjax dtype {args.dtype}, dropout masks from {args.dropout_rng_bits}-bit draws. '
          f'Wall time {wall / 60:.1f} min. Peak memory: growth '
          'of the process maximum RSS over the pre-measurement baseline on CPU, peak device '
          'allocation on GPU. "first step / compile": affectjax lower+compile; torch: the '
          'first step (includes torch.compile\'s compilation).')
  if bound:
    by = ', '.join(f'{k} {v:.0f}' for k, v in gemm['by_framework'].items())
    note += (f' Compute floor: the affectjax step\'s FLOPs (XLA cost analysis of the compiled '
             f'step; loop bodies counted once, so a lower bound) divided by the best fp32 '
             f'matrix-multiply rate measured on this machine in the same run, '
             f'{gemm["gflops"]:.0f} GFLOP/s ({by}; the models\' own GEMM shapes and a '
             f'square 2048 product). "largest possible / torch" = torch eager step time / '
             f'compute floor: an fp32 step doing these FLOPs at the best measured rate would '
             f'reach that ratio; real steps stay below it.')
  command = 'python experiments/benchmarks/tensor_fusion_speed.py ' + ' '.join(
      argv if argv is not None else sys.argv[1:])
  table = '\n'.join(lines)
  text = f'{note}\n\nCommand: `{command.strip()}`\n\n{table}\n' + (
      '\nFailures:\n' + '\n'.join(errors) + '\n' if errors else '')
  print(text)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(os.path.join(HERE, 'README.md'), f'{START}\n{text}{END}',
                            START, END)
  return 0


if __name__ == '__main__':
  sys.exit(main())
