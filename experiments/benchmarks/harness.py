"""What every benchmark here does the same way: run one configuration in its own process,
time a compiled affectjax train step, measure the machine's matrix-multiply rate, and read
peak memory. The scripts import it from their own folder."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mb() -> float:
  """The process's maximum resident set size so far, MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(script: str, args: list[str], env: dict | None = None) -> dict:
  """Runs `script --worker *args` in a fresh process; its `RESULT {json}` line, or
  {'error': the last line it printed}."""
  cmd = [sys.executable, os.path.abspath(script), '--worker', *args]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        env=None if env is None else dict(os.environ, **env))
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode < 0:  # No last words: e.g. the kernel's OOM killer (SIGKILL).
    return {'error': f'worker killed by signal {-proc.returncode} (SIGKILL: host memory '
                     'ran out?)' if proc.returncode == -9 else
            f'worker killed by signal {-proc.returncode}'}
  if proc.returncode or not line:
    tail = ' '.join((proc.stderr or proc.stdout).strip().splitlines()[-1:])
    return {'error': tail[:200] or f'exit {proc.returncode}'}
  return json.loads(line[0][len('RESULT '):])


def report(result: dict) -> None:
  """A worker's answer to `measure`."""
  print('RESULT ' + json.dumps(result))


def time_train_step(exp, arrays, batch: int, steps: int, warmup: int) -> dict:
  """Compiles `exp`'s train step and init, runs `warmup` + 1 steps, times `steps` more.
  Peak memory: the device's peak allocation on GPU, else the growth of the process's
  maximum RSS over the moment before compiling. FLOPs: XLA's cost analysis of the
  compiled step (per device)."""
  import jax
  base = rss_mb()
  start = time.perf_counter()
  step = exp.lower_train_step(batch).compile()
  state = exp.lower_init().compile()(jax.random.PRNGKey(0))
  compile_s = time.perf_counter() - start
  for _ in range(warmup + 1):
    state, m = step(state, arrays)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, arrays)
  jax.block_until_ready(m)
  elapsed = time.perf_counter() - start
  assert np.isfinite(float(m['loss']))
  cost = step.cost_analysis()
  cost = (cost[0] if isinstance(cost, list) else cost) or {}
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform == 'gpu' else None
  peak = stats['peak_bytes_in_use'] / 2**20 if stats else rss_mb() - base
  return {'step_ms': 1e3 * elapsed / steps, 'examples_per_s': batch * steps / elapsed,
          'compile_s': compile_s, 'peak_mb': peak, 'device': device.platform,
          'gflop': cost.get('flops', 0.0) / 1e9}


def gemm_rate(shapes, repeats: int = 10) -> dict:
  """Best sustained fp32 matrix-multiply rate (GFLOP/s) of jax and torch over `shapes`
  ((m, k, n) products): an upper bound on what any implementation reaches on a step whose
  FLOPs are those GEMMs."""
  import jax
  import jax.numpy as jnp
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  best, rng = {}, np.random.default_rng(0)
  for m, k, n in shapes:
    a = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=(k, n)).astype(np.float32)
    ja, jb, f = jnp.asarray(a), jnp.asarray(b), jax.jit(jnp.matmul)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for name, run in (('jax', lambda: f(ja, jb).block_until_ready()),
                      ('torch', lambda: torch.matmul(ta, tb))):
      best[name] = max(best.get(name, 0.0), 2 * m * k * n / best_seconds(run, repeats) / 1e9)
  return {'gflops': max(best.values()), 'by_framework': best}


def best_seconds(run, repeats: int) -> float:
  """The fastest of `repeats` timed calls of `run` (which must wait for its result),
  after one untimed call that compiles and warms caches."""
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return min(times)
