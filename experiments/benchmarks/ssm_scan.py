r"""State-space scans against attention, and the selective scan against a PyTorch mirror.

  python -m pip install -e '.[bench]'     # PyTorch: a benchmark-only extra
  python experiments/benchmarks/ssm_scan.py --readme

Part 1, length sweep (256 to 65,536 steps, batch 1, width 64): one training step
(forward, backward) of an S5 block, a selective-SSM (Mamba) block and a transformer
encoder layer of the same width (4 heads, MLP 128). Throughput is measured by running
the compiled step; memory is the compiled step's own account (arguments + outputs +
temporaries, `memory_analysis()`), so lengths too big to run are still reported. A
step is run only when that account is under --max-run-gib. Plot: ssm_scan.png.

Part 2, 4,096 steps: the affectjax selective-SSM block (jitted train step with Adam)
against a PyTorch mirror of the minimal reference Mamba implementations (same sizes:
in/out projections, causal depthwise conv of 4, x/dt projections, A = -exp(A_log),
D skip, SiLU gate; the scan is the reference's sequential loop over time steps), both
in fresh subprocesses, side by side in one invocation; the ratio of training
throughputs is printed. The mirror runs twice: as the references write the loop
(`dA[:, i]` indexing, whose backward writes every step's gradient into a full-size zero
tensor, so it grows quadratically with length), and with the per-step slices taken once
by `unbind` (a linear backward): the second is the fairer baseline. affectjax runs twice
too: with the selective scan's default form for the platform (sequential on CPU,
parallel on GPU/TPU; the ratio is taken from this one) and with the other form. With
--readme the tables replace the marked section of experiments/benchmarks/README.md.

`--platform gpu` runs both parts on the first GPU (JAX on CUDA, the mirrors on
`cuda`, timed after a device synchronise) and keeps its own README section and plot.
Each process then allocates GPU memory as it goes (no preallocation), so the workers can
share the card with the sweep's process. On an 80 GB H100 the attention layer at 65,536
steps fails to compile (the autotuner asks for 64 GiB), so the GPU section was run with
`--lengths 256,1024,4096,16384`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WIDTH, STATE, CONV, EXPAND = 64, 16, 4, 2
LENGTHS = (256, 1024, 4096, 16384, 65536)
KINDS = {'s5': 'S5 block', 'mamba': 'selective SSM block', 'attention': 'attention layer'}
# The selective scan's two forms (affectjax.layers.ssm.selective_scan; ssm.AUTO_SCAN says
# which one 'auto' runs on each platform).
SCANS = {'sequential': 'sequential scan, fused discretisation, hand-written backward',
         'parallel': 'chunked associative scan'}
JAX_PLATFORM = {'cpu': 'cpu', 'gpu': 'cuda'}  # --platform -> JAX_PLATFORMS.


def _markers(platform: str) -> tuple[str, str]:
  tag = 'ssm-scan' if platform == 'cpu' else f'ssm-scan-{platform}'
  return f'<!-- {tag}:start -->', f'<!-- {tag}:end -->'


def _block(kind: str, scan: str = 'auto'):
  from affectjax.layers import ssm
  from affectjax.layers.attention import TransformerEncoderLayer
  if kind == 'attention':
    return TransformerEncoderLayer(num_heads=4, mlp_dim=2 * WIDTH, dropout=0.0)
  return ssm.SSMBlock(kind, bidirectional=False, scan=scan)


def compiled_step(kind: str, length: int, batch: int = 1, scan: str = 'auto'):
  """(compiled train step, params, inputs) of one block: loss = mean square output."""
  import jax
  import jax.numpy as jnp
  import optax
  block = _block(kind, scan)
  x = jax.ShapeDtypeStruct((batch, length, WIDTH), jnp.float32)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.float32)
  small = jnp.zeros((batch, 16, WIDTH)), jnp.ones((batch, 16))
  params = block.init(jax.random.key(0), *small, train=False)
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  def step(params, opt, x, mask):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(block.apply(p, x, mask, train=False) ** 2))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, x, mask).compile()
  return compiled, params, opt


def _time_steps(compiled, params, opt, batch: int, length: int, steps: int):
  """(seconds per step after one warm-up step, final params)."""
  import jax
  import jax.numpy as jnp
  x = jax.random.normal(jax.random.key(1), (batch, length, WIDTH))
  mask = jnp.ones((batch, length))
  params, opt, loss = compiled(params, opt, x, mask)
  loss.block_until_ready()
  start = time.perf_counter()
  for _ in range(steps):
    params, opt, loss = compiled(params, opt, x, mask)
  loss.block_until_ready()
  return (time.perf_counter() - start) / steps, params


def _bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
             m.alias_size_in_bytes)


def sweep_lengths(lengths, max_run_gib: float, repeats: int) -> list[dict]:
  rows = []
  for kind in KINDS:
    for length in lengths:
      compiled, params, opt = compiled_step(kind, length)
      row = {'kind': kind, 'length': length, 'bytes': _bytes(compiled), 'tokens_per_s': None}
      if row['bytes'] <= max_run_gib * 2 ** 30:
        seconds, _ = _time_steps(compiled, params, opt, 1, length, repeats)
        row['tokens_per_s'] = length / seconds
      rows.append(row)
      print(json.dumps(row), flush=True)
  return rows


def plot(rows, path: str) -> None:
  from affectjax.plots import new_figure
  fig = new_figure((10, 4))
  ax1, ax2 = fig.subplots(1, 2)
  for kind, label in KINDS.items():
    r = [x for x in rows if x['kind'] == kind]
    run = [x for x in r if x['tokens_per_s']]
    ax1.plot([x['length'] for x in run], [x['tokens_per_s'] for x in run], 'o-', label=label)
    ax2.plot([x['length'] for x in r], [x['bytes'] / 2 ** 20 for x in r], 'o-', label=label)
  lengths = sorted({x['length'] for x in rows})
  ref = [x for x in rows if x['kind'] == 'mamba']
  ax2.plot(lengths, [ref[0]['bytes'] / 2 ** 20 * n / lengths[0] for n in lengths], 'k:',
           label='linear in length')
  for ax, title in ((ax1, 'training throughput (tokens/s)'),
                    (ax2, 'compiled step memory (MiB)')):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('sequence length')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
  ax2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _rss_mb() -> float:
  """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would
  carry over the parent's peak (the length sweep runs in the parent)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_affectjax(length: int, batch: int, steps: int, scan: str = 'auto') -> dict:
  import jax
  compiled, params, opt = compiled_step('mamba', length, batch, scan)
  seconds, params = _time_steps(compiled, params, opt, batch, length, steps)
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return {'step_s': seconds, 'tokens_per_s': batch * length / seconds, 'params': n,
          'rss_mb': _rss_mb()}


def torch_mirror(unbind: bool = False):
  """The Mamba block of the minimal reference implementations, at WIDTH (PyTorch).

  unbind=False indexes `dA[:, i]` per step as the references do; True slices the
  sequence once with `unbind` (same outputs, linear-time backward).
  """
  import torch
  from torch import nn
  import torch.nn.functional as F

  class MambaMixer(nn.Module):
    def __init__(self):
      super().__init__()
      inner, rank = EXPAND * WIDTH, math.ceil(WIDTH / 16)
      self.inner, self.rank = inner, rank
      self.norm = nn.RMSNorm(WIDTH)
      self.in_proj = nn.Linear(WIDTH, 2 * inner, bias=False)
      self.conv1d = nn.Conv1d(inner, inner, CONV, groups=inner, padding=CONV - 1)
      self.x_proj = nn.Linear(inner, rank + 2 * STATE, bias=False)
      self.dt_proj = nn.Linear(rank, inner)
      self.A_log = nn.Parameter(torch.log(torch.arange(1, STATE + 1.0).repeat(inner, 1)))
      self.D = nn.Parameter(torch.ones(inner))
      self.out_proj = nn.Linear(inner, WIDTH, bias=False)

    def scan(self, u, delta, A, B, C):
      b, length, _ = u.shape
      dA = torch.exp(torch.einsum('bld,dn->bldn', delta, A))
      dBu = torch.einsum('bld,bln,bld->bldn', delta, B, u)
      x = torch.zeros(b, self.inner, STATE, device=u.device)
      ys = []
      if unbind:
        steps = zip(dA.unbind(1), dBu.unbind(1), C.unbind(1))
      else:  # The reference's indexing.
        steps = ((dA[:, i], dBu[:, i], C[:, i]) for i in range(length))
      for a_i, bu_i, c_i in steps:  # The reference's sequential scan.
        x = a_i * x + bu_i
        ys.append(torch.einsum('bdn,bn->bd', x, c_i))
      return torch.stack(ys, dim=1) + u * self.D

    def forward(self, h):
      x = self.norm(h)
      length = x.shape[1]
      xi, z = self.in_proj(x).chunk(2, dim=-1)
      xi = F.silu(self.conv1d(xi.transpose(1, 2))[:, :, :length].transpose(1, 2))
      dt, B, C = self.x_proj(xi).split([self.rank, STATE, STATE], dim=-1)
      delta = F.softplus(self.dt_proj(dt))
      y = self.scan(xi, delta, -torch.exp(self.A_log), B, C) * F.silu(z)
      return h + self.out_proj(y)

  return MambaMixer()


def bench_torch(length: int, batch: int, steps: int, unbind: bool = False,
                platform: str = 'cpu') -> dict:
  import torch
  torch.manual_seed(0)
  device = 'cuda' if platform == 'gpu' else 'cpu'
  model = torch_mirror(unbind).to(device)
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  x = torch.randn(batch, length, WIDTH, device=device)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def step():
    opt.zero_grad()
    loss = (model(x) ** 2).mean()
    loss.backward()
    opt.step()

  step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  seconds = (time.perf_counter() - start) / steps
  return {'step_s': seconds, 'tokens_per_s': batch * length / seconds,
          'params': sum(p.numel() for p in model.parameters()), 'rss_mb': _rss_mb(),
          'torch_threads': torch.get_num_threads()}


def _measure(framework: str, length: int, batch: int, steps: int, platform: str) -> dict:
  out = subprocess.run([sys.executable, __file__, '--worker', framework, '--length',
                        str(length), '--batch', str(batch), '--steps', str(steps),
                        '--platform', platform],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, 'JAX_PLATFORMS': JAX_PLATFORM[platform]})
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--lengths', default=','.join(map(str, LENGTHS)))
  p.add_argument('--max-run-gib', type=float, default=4.0)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--mirror-length', type=int, default=4096)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--readme', action='store_true')
  p.add_argument('--platform', choices=['cpu', 'gpu'], default='cpu')
  p.add_argument('--worker', choices=['affectjax', *(f'affectjax_{m}' for m in SCANS),
                                      'torch', 'torch_unbind'],
                 help=argparse.SUPPRESS)
  p.add_argument('--length', type=int, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    if args.worker.startswith('affectjax'):
      out = bench_affectjax(args.length, args.batch, args.steps,
                            args.worker.partition('_')[2] or 'auto')
    else:
      out = bench_torch(args.length, args.batch, args.steps, args.worker == 'torch_unbind',
                        args.platform)
    print(json.dumps(out))
    return 0
  if args.platform == 'gpu':
    os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'  # Inherited by the workers.
  import jax
  jax.config.update('jax_platforms', JAX_PLATFORM[args.platform])
  from affectjax import hardware
  start_marker, end_marker = _markers(args.platform)
  suffix = '' if args.platform == 'cpu' else f'_{args.platform}'
  rows = sweep_lengths([int(n) for n in args.lengths.split(',')], args.max_run_gib,
                       args.repeats)
  png = os.path.join(HERE, f'ssm_scan{suffix}.png')
  plot(rows, png)
  sweep_table = ['| block | ' + ' | '.join(str(r['length']) for r in rows
                                          if r['kind'] == 's5') + ' |',
                 '|---|' + '---|' * sum(r['kind'] == 's5' for r in rows)]
  for kind, label in KINDS.items():
    cells = []
    for r in (x for x in rows if x['kind'] == kind):
      speed = f"{r['tokens_per_s'] / 1e3:.1f}k tok/s" if r['tokens_per_s'] else 'not run'
      cells.append(f"{speed}, {r['bytes'] / 2 ** 20:,.0f} MiB")
    sweep_table.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  mamba = [r for r in rows if r['kind'] == 'mamba']
  growth = ', '.join(f"{b['length'] // a['length']}x length: {b['bytes'] / a['bytes']:.2f}x "
                     'memory' for a, b in zip(mamba, mamba[1:]))
  jx = _measure('affectjax', args.mirror_length, args.batch, args.steps, args.platform)
  from affectjax.layers import ssm
  default_scan = ssm.AUTO_SCAN.get(JAX_PLATFORM[args.platform], ssm.AUTO_SCAN['default'])
  (other_scan,) = set(SCANS) - {default_scan}
  jo = _measure(f'affectjax_{other_scan}', args.mirror_length, args.batch, args.steps,
                args.platform)
  th = _measure('torch', args.mirror_length, args.batch, args.steps, args.platform)
  tu = _measure('torch_unbind', args.mirror_length, args.batch, args.steps, args.platform)
  ratio = jx['tokens_per_s'] / th['tokens_per_s']
  ratio_unbind = jx['tokens_per_s'] / tu['tokens_per_s']
  command = ('python experiments/benchmarks/ssm_scan.py ' +
             ' '.join(a for a in (argv if argv is not None else sys.argv[1:])))
  block = f"""{start_marker}
Generated by `{command}` on {hardware.describe()}.

Training step (forward, backward, Adam) of one block of width {WIDTH}, batch 1; each cell:
throughput, compiled step memory (arguments + outputs + temporaries). Memory of the
selective SSM block per length step: {growth}.

{chr(10).join(sweep_table)}

![throughput and memory against length](ssm_scan{suffix}.png)

Selective-SSM block at {args.mirror_length} steps, batch {args.batch}, {args.steps} timed
steps after one warm-up, each framework in its own process:

| framework | params | step (s) | tokens/s | peak RSS (MiB) |
|---|---|---|---|---|
| affectjax, {SCANS[default_scan]} (the default on {args.platform}) | {jx['params']:,} | {jx['step_s']:.3f} | {jx['tokens_per_s']:,.0f} | {jx['rss_mb']:,.0f} |
| affectjax, {SCANS[other_scan]} | {jo['params']:,} | {jo['step_s']:.3f} | {jo['tokens_per_s']:,.0f} | {jo['rss_mb']:,.0f} |
| PyTorch mirror (sequential scan, `dA[:, i]` as the references, {th['torch_threads']} threads) | {th['params']:,} | {th['step_s']:.3f} | {th['tokens_per_s']:,.0f} | {th['rss_mb']:,.0f} |
| PyTorch mirror (sequential scan, `unbind` slices, {tu['torch_threads']} threads) | {tu['params']:,} | {tu['step_s']:.3f} | {tu['tokens_per_s']:,.0f} | {tu['rss_mb']:,.0f} |

Training throughput ratio (affectjax's default / PyTorch): **{ratio:.1f}x** against the
references' loop, **{ratio_unbind:.1f}x** against the `unbind` loop (target: at least 5x).
The default form is {jo['step_s'] / jx['step_s']:.1f}x faster than the other one here.
{end_marker}"""
  print(block)
  if args.readme:
    from affectjax import workdir
    title = 'State-space scans: length sweep and the selective scan vs PyTorch'
    workdir.replace_section(os.path.join(HERE, 'README.md'), block, start_marker, end_marker,
                            f'{title} ({args.platform.upper()})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
