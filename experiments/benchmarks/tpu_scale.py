r"""Scale table for Cloud TPU slices, from ahead-of-time compiles on any machine.

  python experiments/benchmarks/tpu_scale.py --readme      # writes the table into TPU_SETUP.md

For each family's largest configuration (the input shapes its data pipeline gives, at the
sizes named below) and each slice, the real train step (`experiment.Experiment.lower_train_step`,
the one `affectjax train` runs) is compiled by the TPU compiler for the slice's devices as
`jax.experimental.topologies` describes them (libtpu installed, no TPU needed:
`pip install -e '.[tpu]'`). Slices: v5e-8 and v5e-256, v5p-8 (4 chips) and v5p-128 (64
chips); the larger ones are multi-host, and the compiled program is the one each host runs.
Reported per chip: parameters and optimizer state (the shard of each array that the
mesh's shardings leave on one chip), the compiled temporaries (activations and
workspace), the compiled peak (arguments + outputs + temporaries - aliased), FLOPs of the
per-device program (XLA cost analysis), whether the peak fits the chip's HBM, and the
model FLOPs utilisation the cost analysis predicts: a roofline bound, FLOPs / peak bf16
rate over max(FLOPs / peak rate, bytes accessed / HBM bandwidth). A real step also waits
on collectives and on the host, so a measured MFU is lower.

Each compile runs in its own process (the TPU compiler keeps memory between compiles).
When the TPU compiler says a step does not fit the chip's HBM, that is the row's answer,
and the script tries half the batch per chip (down to 8) to say what does fit. When this
host runs out of memory compiling a step (the worker is killed), the row says so and
half the batch is tried too: the answer for the larger batch is then unknown, not no. Big models
take minutes to compile here, so each result is cached (~/.cache/affectjax/tpu_scale) under
a hash of the lowered program (StableHLO text), the topology and the jax version: a
change that alters the step compiles again, anything else (docs, other families) does not;
`--fresh` compiles everything again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
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
F32 = 'float32'
CLIP_SPEC = {'audio': ((200, 64), F32), 'frame_mask': ((200,), F32),
             'video': ((16, 160, 160, 3), F32)}
# IEMOCAP dialogues at their longest (112 utterances) with the 384-d sentence embeddings
# of the ERC configs.
ERC_SPEC = {'text': ((112, 384), F32), 'speaker': ((112,), 'int32'),
            'label_mask': ((112,), F32), 'label': ((112,), 'int32')}
ERC_INPUTS = {'num_speakers': 2, 'encoder': ''}
# Speech encoders fine-tuned end to end on 4.5-s clips (configs/ravdess_whisper.py's
# length): Whisper reads 450 log-mel frames, the wav2vec2 family 72,000 samples.
import speech_encoders  # noqa: E402
WHISPER_SPEC = {'audio': ((450, 80), F32), 'frame_mask': ((450,), F32), 'label': ((), 'int32')}
WAV_SPEC = {'audio': ((72000,), F32), 'frame_mask': ((72000,), F32), 'label': ((), 'int32')}


def _entry(config, modalities, spec, per_chip, mesh='data', classes=None, inputs=None,
           what=''):
  return dict(config=config, modalities=modalities, spec=spec, per_chip=per_chip, mesh=mesh,
              classes=classes, inputs=inputs or {}, what=what)


# name -> what is compiled. `mesh`: 'data' (all chips on the data axis) or 'fsdp' (all
# on the fsdp axis: parameters and optimizer state split over every chip).
ENTRIES = {
    'TFN (MOSEI-sized)': _entry(
        'mosi.py:tfn', ('text', 'audio', 'vision'),
        {'text': ((300,), F32), 'audio': ((74,), F32), 'vision': ((35,), F32),
         'label': ((), F32)}, 256,
        what='utterance vectors of CMU-MOSEI\'s standard features: GloVe 300, COVAREP 74, '
        'Facet 35'),
    'DialogueGCN': _entry('erc.py:dialoguegcn', ('text',), ERC_SPEC, 32, classes=6,
                          inputs=ERC_INPUTS, what='IEMOCAP dialogues of 112 utterances'),
    'MMGCN': _entry('erc.py:mmgcn', ('text',), ERC_SPEC, 32, classes=6, inputs=ERC_INPUTS,
                    what='as DialogueGCN'),
    'SpeechSSM (40 s)': _entry(
        'ravdess_speech.py:ssm,fold1', ('audio',),
        {'audio': ((4000, 64), F32), 'frame_mask': ((4000,), F32), 'label': ((), 'int32')}, 32,
        classes=8, what='4,000 log-mel frames (80 s at the config\'s 20 ms hop), 20x RAVDESS\'s clips'),
    'contrastive (large batch)': _entry(
        'ravdess_contrastive.py:fold1', ('audio', 'face'),
        {'audio': ((200, 64), F32), 'frame_mask': ((200,), F32), 'label': ((), 'int32'),
         'face': ((35,), F32), 'actor': ((), 'int32')}, 512, classes=8,
        what='512 pairs per chip (a global batch of 131,072 on v5e-256), memory-lean InfoNCE'),
    'Whisper-base fine-tuning': _entry(
        'ravdess_whisper.py:fold1,finetune', ('audio',), WHISPER_SPEC, 16, classes=8,
        inputs={'speech_encoder': 'whisper-base'},
        what='whisper-base\'s encoder under the config\'s head, trained end to end on 4.5-s '
        'clips'),
    'WavLM-base fine-tuning': _entry(
        'ravdess_whisper.py:fold1,finetune', ('audio',), WAV_SPEC, 16, classes=8,
        inputs={'speech_encoder': speech_encoders.wavlm_folder()},
        what='WavLM-base-plus\'s sizes (randomly initialised), trained end to end on 4.5-s '
        'waveforms'),
    'audio-visual MAE base': _entry('clips_mae.py:av,ravdess,base', ('audio', 'video'),
                                    CLIP_SPEC, 32, what='HiCMAE\'s clip shapes'),
    'audio-visual MAE large': _entry('clips_mae.py:av,ravdess,large', ('audio', 'video'),
                                     CLIP_SPEC, 32, mesh='fsdp', what='HiCMAE\'s clip shapes'),
}
TOPOLOGIES = ('v5e:2x4', 'v5e:16x16', 'v5p:2x2x1', 'v5p:4x4x4')


def _slice_name(family: str, chips: int) -> str:
  # Cloud TPU names v5p slices by TensorCores (2 per chip), v5e/v6e by chips.
  return f'{family}-{2 * chips if family == "v5p" else chips}'


def _topology_name(topology: str, n: int, kind: str) -> str:
  return _slice_name(CHIPS.get(kind, (kind,))[0], n)


def compile_entry(name: str, topology: str, per_chip: int, fresh: bool = False) -> dict:
  import jax
  import numpy as np
  from affectjax import compile as compile_lib
  from affectjax import config as config_lib
  from affectjax import experiment as experiment_lib
  from affectjax import sharding as sharding_lib
  e = ENTRIES[name]
  config = config_lib.load(os.path.join(REPO, 'configs', e['config']))
  devices = compile_lib.topology_devices(topology)
  with config.unlocked():
    config.model.dtype = 'bfloat16'
    config.mesh.model = 1
    config.mesh.data, config.mesh.fsdp = ((1, len(devices)) if e['mesh'] == 'fsdp' else
                                          (len(devices), 1))
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  element_spec = {k: (shape, np.dtype(dt)) for k, (shape, dt) in e['spec'].items()}
  exp = experiment_lib.Experiment(config, mesh, element_spec, e['modalities'], e['classes'],
                                  model_inputs=e['inputs'])
  batch = per_chip * len(devices)
  lowered = exp.lower_train_step(batch)
  key = hashlib.blake2b(json.dumps([lowered.as_text(), topology, jax.__version__]).encode(),
                        digest_size=12).hexdigest()
  cache = os.path.join(os.path.expanduser('~'), '.cache', 'affectjax', 'tpu_scale',
                       f'{key}.json')
  if os.path.exists(cache) and not fresh:
    with open(cache) as f:
      return dict(json.load(f), cached=True)
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as err:  # The TPU compiler's verdict (e.g. RESOURCE_EXHAUSTED).
    out = {'error': ' '.join(str(err).split())[:300]}
  else:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    kind = devices[0].device_kind
    out = {
        'kind': kind, 'slice': _topology_name(topology, len(devices), kind),
        'chips': len(devices), 'mesh': dict(mesh.shape), 'batch': batch,
        'params': exp.num_params,
        'param_bytes': compile_lib.state_bytes_per_device(exp.abstract_state.params),
        'opt_bytes': compile_lib.state_bytes_per_device(exp.abstract_state.opt_state),
        'state_bytes': int(mem.argument_size_in_bytes),
        'temp_bytes': int(mem.temp_size_in_bytes),
        'peak_bytes': int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
                          mem.temp_size_in_bytes - mem.alias_size_in_bytes),
        'flops': float(cost.get('flops', 0.0)),
        'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
        'compile_s': time.perf_counter() - start,
    }
  out.update(name=name, config=e['config'], topology=topology, per_chip=per_chip)
  if 'error' in out and not _does_not_fit(out):
    return out  # Not the compiler's verdict on the program: not worth keeping.
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  from affectjax import workdir
  workdir.write_atomic(cache, 'the compile result', lambda f: json.dump(out, f))
  return out


def _measure(name: str, topology: str, per_chip: int, fresh: bool) -> dict:
  args = ['--entry', name, '--topology', topology, '--per-chip', str(per_chip)]
  out = harness.measure(__file__, args + (['--fresh'] if fresh else []),
                        env={'JAX_PLATFORMS': 'cpu'})
  return dict(out, name=name, topology=topology, per_chip=per_chip)


def _does_not_fit(row: dict) -> bool:
  return 'RESOURCE_EXHAUSTED' in row.get('error', '')


def _host_ran_out(row: dict) -> bool:
  return 'killed by signal 9' in row.get('error', '')


def _slice(topology: str) -> str:
  """'v5e:2x4' -> 'v5e-8 (v5e:2x4)', without compiling."""
  family, dims = topology.split(':')
  chips = 1
  for d in dims.split('x'):
    chips *= int(d)
  return f'{_slice_name(family, chips)} ({topology})'


def table(rows: list[dict]) -> str:
  host_gib = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  lines = ['| model | slice | mesh | global batch | parameters | params GiB/chip | '
           'optimizer GiB/chip | activations GiB/chip | peak GiB/chip | fits HBM | '
           'TFLOP/step/chip | roofline MFU bound | compile s |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  gib = 2**30
  for r in rows:
    if 'error' in r:
      if _does_not_fit(r):  # The TPU compiler's own verdict, e.g. '... (18.54G) exceeds
        need = r['error'].split('RESOURCE_EXHAUSTED:')[-1].strip()  # available HBM'.
        verdict = f'no: {need[:160]}'
      elif _host_ran_out(r):
        verdict = f'unknown: this host ran out of memory compiling it ({host_gib:.0f} GiB)'
      else:
        verdict = f"error: {r['error'][:160]}"
      lines.append(f"| {r['name']} | {_slice(r['topology'])} | | {r['per_chip']}/chip | | | | "
                   f"| | {verdict} | | | |")
      continue
    _, peak_flops, hbm, bandwidth = CHIPS.get(r['kind'], ('', 0, 0, 0))
    mesh = ' x '.join(f'{k} {v}' for k, v in r['mesh'].items() if v > 1) or 'one chip'
    fits = (f"yes ({hbm / gib:.0f} GiB)" if r['peak_bytes'] <= hbm else
            f"no ({hbm / gib:.0f} GiB)") if hbm else '?'
    if peak_flops and r['flops']:
      compute_s = r['flops'] / peak_flops
      mfu = f"{100 * compute_s / max(compute_s, r['bytes_accessed'] / bandwidth):.0f}%"
    else:
      mfu = '?'
    params = r['params']
    params = f'{params / 1e6:.1f} M' if params >= 1e5 else f'{params / 1e3:.0f} k'
    lines.append(f"| {r['name']} | {r['slice']} ({r['topology']}) | {mesh} | {r['batch']:,} | "
                 f"{params} | {r['param_bytes'] / gib:.3f} | {r['opt_bytes'] / gib:.3f} | "
                 f"{r['temp_bytes'] / gib:.2f} | {r['peak_bytes'] / gib:.2f} | {fits} | "
                 f"{r['flops'] / 1e12:.3f} | {mfu} | {r['compile_s']:.0f} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--entry', default='')
  p.add_argument('--entries', default=','.join(ENTRIES),
                 help='comma-separated entry names (default: all)')
  p.add_argument('--topology', default='')
  p.add_argument('--topologies', default=','.join(TOPOLOGIES))
  p.add_argument('--per-chip', type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument('--fresh', action='store_true', help='ignore cached compile results')
  p.add_argument('--readme', action='store_true', help='write the table into TPU_SETUP.md')
  p.add_argument('--section', default='', help='write into a section of its own (markers '
                 'tpu-scale-NAME), after the main table, instead of replacing the main table: '
                 'for a subset of --entries or --topologies')
  args = p.parse_args(argv)
  command = shlex.join(['python', 'experiments/benchmarks/tpu_scale.py',
                        *(sys.argv[1:] if argv is None else argv)])
  if args.worker:
    harness.report(compile_entry(args.entry, args.topology, args.per_chip, args.fresh))
    return 0
  names = args.entries.split(',')
  unknown = [e for e in names if e not in ENTRIES]
  if unknown:
    p.error(f'--entries: unknown {unknown[0]!r} ({", ".join(ENTRIES)})')
  start = time.time()
  rows = []
  for name in names:
    for topology in args.topologies.split(','):
      per_chip = ENTRIES[name]['per_chip']
      while True:
        rows.append(_measure(name, topology, per_chip, args.fresh))
        print(json.dumps(rows[-1]), flush=True)
        if not (_does_not_fit(rows[-1]) or _host_ran_out(rows[-1])) or per_chip <= 8:
          break
        per_chip //= 2
  import jax
  from affectjax import hardware
  sizes = '\n'.join(f'- {n}: `configs/{ENTRIES[n]["config"]}`, {ENTRIES[n]["what"]}; '
                    f'{ENTRIES[n]["per_chip"]} examples per chip'
                    + (', mesh all `fsdp`' if ENTRIES[n]['mesh'] == 'fsdp' else '')
                    for n in names)
  start_marker, end_marker = ((f'<!-- tpu-scale-{args.section}:start -->',
                               f'<!-- tpu-scale-{args.section}:end -->') if args.section
                              else (START, END))
  section = f"""{start_marker}
Generated by `{command}` in
{(time.time() - start) / 60:.1f} min on {hardware.cpu_name()} ({os.cpu_count()} cores), jax
{jax.__version__}, ahead-of-time compiles for the slice's devices (no TPU used;
{sum(r.get('cached', False) for r in rows)} of {len(rows)} results read from the script's compile cache, keyed by the lowered program). bf16 compute, mesh
`data` over every chip unless the entry says `fsdp`; per-chip batches halved where they do
not fit. Entries:
{sizes}

Per chip: "params" and "optimizer" = the shard of the parameters and of the AdamW state
one chip holds; "activations" = the compiled temporaries; peak = arguments + outputs +
temporaries - aliased. "roofline MFU bound" = (FLOPs / peak bf16 rate) / max(FLOPs / peak
rate, bytes accessed / HBM bandwidth), from XLA's cost analysis: an upper bound, not a
measurement.

{table(rows)}
{end_marker}"""
  print(section)
  if args.readme:
    from affectjax import workdir
    path = os.path.join(REPO, 'TPU_SETUP.md')
    with open(path) as f:
      text = f.read()
    if args.section and start_marker not in text and END in text:  # Right after the main table.
      workdir.write_atomic(path, 'TPU_SETUP.md', lambda f: f.write(
          text.replace(END, f'{END}\n\n{start_marker}\n{end_marker}', 1)))
    workdir.replace_section(path, section, start_marker, end_marker,
                            'Scale: compiled for real slices')
  return 0


if __name__ == '__main__':
  sys.exit(main())
