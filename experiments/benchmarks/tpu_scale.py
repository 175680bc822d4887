r"""Scale table for Cloud TPU slices, from ahead-of-time compiles on any machine.

  python experiments/benchmarks/tpu_scale.py --readme      # writes the table into TPU_SETUP.md

For each entry (a config and its variant, the input shapes its data pipeline gives) and
each topology, the real train step (`train.Experiment.lower_train_step`, the same one
`affectjax train` runs) is compiled by the TPU compiler for the slice's devices as
`jax.experimental.topologies` describes them (libtpu installed, no TPU needed:
`pip install -e '.[tpu]'`). Reported per device: parameters + optimizer state (the
step's donated arguments), temporaries (activations and workspace), the compiled peak
(arguments + outputs + temporaries - aliased), FLOPs of the per-device program (XLA cost
analysis), whether the peak fits the chip's HBM, and the model FLOPs utilisation the cost
analysis predicts: a roofline bound, FLOPs / peak bf16 rate over max(FLOPs / peak rate,
bytes accessed / HBM bandwidth). A real step also waits on collectives and on the host, so
the measured MFU is lower; the bound says whether the step is compute- or memory-bound.

Each compile runs in its own process (the TPU compiler keeps memory between compiles).
Inputs: HiCMAE's clip shapes (16 face frames of 160 x 160, 4 s of 64-band log-mel at a
20 ms hop = 200 frames), bf16 compute, global batch 32 per chip. When the TPU compiler
says a step does not fit the chip's HBM, that is the row's answer, and the script tries
half the batch per chip (down to 8) to say what does fit. Compiles of big models take
minutes here, so each result is cached (~/.cache/affectjax/tpu_scale, keyed by entry,
topology, mesh, batch, the jax version and the content of affectjax/ and configs/);
`--fresh` compiles everything again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

REPO = harness.REPO
START, END = '<!-- tpu-scale:start -->', '<!-- tpu-scale:end -->'

# Chip facts (Google Cloud TPU documentation): peak dense bf16 FLOP/s, HBM bytes, HBM B/s.
CHIPS = {
    'TPU v5 lite': ('v5e', 197e12, 16 * 2**30, 819e9),
    'TPU v5': ('v5p', 459e12, 95 * 2**30, 2765e9),
    'TPU v6 lite': ('v6e', 918e12, 32 * 2**30, 1640e9),
}
# (name, config, batch per chip, model axis, input spec without the batch dimension)
CLIP_SPEC = {'audio': ((200, 64), 'float32'), 'frame_mask': ((200,), 'float32'),
             'video': ((16, 160, 160, 3), 'float32')}
ENTRIES = {
    'audio MAE base': ('ravdess_audiomae.py:fold1,base', ('audio',),
                       {'audio': ((200, 64), 'float32'), 'frame_mask': ((200,), 'float32')}),
    'audio-visual MAE base': ('clips_avmae.py:ravdess,base', ('audio', 'video'), CLIP_SPEC),
    'audio-visual MAE large': ('clips_avmae.py:ravdess,large', ('audio', 'video'), CLIP_SPEC),
}
TOPOLOGIES = ('v5e:2x4', 'v5p:2x2x1')
PER_CHIP = 32


def _topology_name(topology: str, n: int, kind: str) -> str:
  # Cloud TPU names v5p slices by TensorCores (2 per chip), v5e/v6e by chips.
  family = CHIPS.get(kind, (kind,))[0]
  return f'{family}-{2 * n if family == "v5p" else n}'


def compile_entry(name: str, topology: str, model_axis: int, per_chip: int = PER_CHIP) -> dict:
  import numpy as np
  from affectjax import config as config_lib
  from affectjax import compile as compile_lib
  from affectjax import sharding as sharding_lib
  from affectjax import train as train_lib
  path, modalities, spec = ENTRIES[name]
  config = config_lib.load(os.path.join(REPO, 'configs', path))
  devices = compile_lib.topology_devices(topology)
  with config.unlocked():
    config.model.dtype = 'bfloat16'
    config.mesh.model = model_axis
    config.mesh.data = len(devices) // model_axis
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  element_spec = {k: (shape, np.dtype(dt)) for k, (shape, dt) in spec.items()}
  exp = train_lib.Experiment(config, mesh, element_spec, modalities)
  batch = per_chip * len(devices)
  start = time.perf_counter()
  compiled = exp.lower_train_step(batch).compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  kind = devices[0].device_kind
  return {
      'name': name, 'config': path, 'topology': topology, 'kind': kind,
      'slice': _topology_name(topology, len(devices), kind), 'chips': len(devices),
      'mesh': dict(mesh.shape), 'batch': batch, 'params': exp.num_params,
      'state_bytes': int(mem.argument_size_in_bytes),
      'temp_bytes': int(mem.temp_size_in_bytes),
      'peak_bytes': int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
                        mem.temp_size_in_bytes - mem.alias_size_in_bytes),
      'flops': float(cost.get('flops', 0.0)),
      'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
      'compile_s': seconds,
  }


def _code_hash() -> str:
  digest = hashlib.blake2b(digest_size=8)
  for folder in ('affectjax', 'configs'):
    for root, _, files in sorted(os.walk(os.path.join(REPO, folder))):
      for f in sorted(files):
        if f.endswith('.py'):
          with open(os.path.join(root, f), 'rb') as fh:
            digest.update(f.encode() + fh.read())
  return digest.hexdigest()


def _measure(name: str, topology: str, model_axis: int, per_chip: int, fresh: bool) -> dict:
  import jax
  key = hashlib.blake2b(json.dumps([name, topology, model_axis, per_chip, jax.__version__,
                                    _code_hash()]).encode(), digest_size=8).hexdigest()
  cache = os.path.join(os.path.expanduser('~'), '.cache', 'affectjax', 'tpu_scale',
                       f'{key}.json')
  if os.path.exists(cache) and not fresh:
    with open(cache) as f:
      return dict(json.load(f), cached=True)
  out = harness.measure(__file__, ['--entry', name, '--topology', topology, '--model-axis',
                                   str(model_axis), '--per-chip', str(per_chip)],
                        env={'JAX_PLATFORMS': 'cpu'})
  out = dict(out, name=name, topology=topology, per_chip=per_chip)
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  from affectjax import workdir
  workdir.write_atomic(cache, 'the compile result', lambda f: json.dump(out, f))
  return out


def _does_not_fit(row: dict) -> bool:
  return 'RESOURCE_EXHAUSTED' in row.get('error', '')


def table(rows: list[dict]) -> str:
  lines = ['| model | slice | mesh | global batch | parameters | params + optimizer GiB/chip | '
           'activations GiB/chip | peak GiB/chip | fits HBM | TFLOP/step/chip | '
           'roofline MFU bound | compile s |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  gib = 2**30
  for r in rows:
    if 'error' in r:
      if _does_not_fit(r):  # The TPU compiler's own verdict, e.g. '... (18.54G) exceeds
        need = r['error'].split('RESOURCE_EXHAUSTED:')[-1].strip()  # available HBM'.
        lines.append(f"| {r['name']} | {r['topology']} | | {r['per_chip']}/chip | | | | | "
                     f"no: {need[:110]} | | | |")
      else:
        lines.append(f"| {r['name']} | {r['topology']} | error: {r['error'][:80]} |"
                     + ' |' * 9)
      continue
    _, peak_flops, hbm, bandwidth = CHIPS.get(r['kind'], ('', 0, 0, 0))
    mesh = ' x '.join(f'{k} {v}' for k, v in r['mesh'].items())
    fits = (f"yes ({hbm / gib:.0f} GiB)" if r['peak_bytes'] <= hbm else
            f"no ({hbm / gib:.0f} GiB)") if hbm else '?'
    if peak_flops and r['flops']:
      compute_s = r['flops'] / peak_flops
      mfu = f"{100 * compute_s / max(compute_s, r['bytes_accessed'] / bandwidth):.0f}%"
    else:
      mfu = '?'
    lines.append(f"| {r['name']} | {r['slice']} ({r['topology']}) | {mesh} | {r['batch']} | "
                 f"{r['params'] / 1e6:.1f} M | {r['state_bytes'] / gib:.2f} | "
                 f"{r['temp_bytes'] / gib:.2f} | {r['peak_bytes'] / gib:.2f} | {fits} | "
                 f"{r['flops'] / 1e12:.2f} | {mfu} | {r['compile_s']:.0f} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--entry', default='')
  p.add_argument('--entries', default=','.join(ENTRIES),
                 help='comma-separated entry names (default: all)')
  p.add_argument('--topology', default='')
  p.add_argument('--topologies', default=','.join(TOPOLOGIES))
  p.add_argument('--model-axis', type=int, default=1)
  p.add_argument('--per-chip', type=int, default=PER_CHIP, help=argparse.SUPPRESS)
  p.add_argument('--fresh', action='store_true', help='ignore cached compile results')
  p.add_argument('--readme', action='store_true', help='write the table into TPU_SETUP.md')
  args = p.parse_args(argv)
  if args.worker:
    harness.report(compile_entry(args.entry, args.topology, args.model_axis, args.per_chip))
    return 0
  unknown = [e for e in args.entries.split(',') if e not in ENTRIES]
  if unknown:
    p.error(f'--entries: unknown {unknown[0]!r} ({", ".join(ENTRIES)})')
  start = time.time()
  rows = []
  for name in args.entries.split(','):
    for topology in args.topologies.split(','):
      per_chip = PER_CHIP
      while True:
        rows.append(_measure(name, topology, args.model_axis, per_chip, args.fresh))
        print(json.dumps(rows[-1]), flush=True)
        if not _does_not_fit(rows[-1]) or per_chip <= 8:
          break
        per_chip //= 2
  import jax
  from affectjax import hardware
  section = f"""{START}
Generated by `python experiments/benchmarks/tpu_scale.py --readme` in
{(time.time() - start) / 60:.1f} min on {hardware.cpu_name()} ({os.cpu_count()} cores), jax
{jax.__version__}, ahead-of-time compiles for the slice's devices (no TPU used;
{sum(r.get('cached', False) for r in rows)} of {len(rows)} results read from the script's compile cache). Inputs:
HiCMAE's clip shapes (16 face frames of 160 x 160, 200 log-mel frames of 64 bands), bf16
compute, global batch {PER_CHIP} per chip (halved where that does not fit), mesh `model`
axis {args.model_axis}. Per chip:
"params + optimizer" = the step's arguments (parameters, AdamW moments, the batch shard);
"activations" = the compiled temporaries; peak = arguments + outputs + temporaries -
aliased. "roofline MFU bound" = (FLOPs / peak bf16 rate) / max(FLOPs / peak rate, bytes
accessed / HBM bandwidth), from XLA's cost analysis: an upper bound, not a measurement.

{table(rows)}
{END}"""
  print(section)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(os.path.join(REPO, 'TPU_SETUP.md'), section, START, END,
                            'Scale: compiled for real slices')
  return 0


if __name__ == '__main__':
  sys.exit(main())
