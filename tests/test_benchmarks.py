"""The benchmark's models run, and the PyTorch mirror has the sizes affectjax has."""

import os

import numpy as np
import pytest

from conftest import REPO, load_script


def _script(name):
  return load_script('benchmarks', f'{name}.py')


def _bench():
  return _script('tensor_fusion_speed')


@pytest.mark.parametrize('model', ['tfn', 'lmf'])
def test_affectjax_side_runs(model):
  out = _bench().bench_affectjax(model, batch=8, steps=2, warmup=0)
  assert out['step_ms'] > 0 and np.isfinite(out['examples_per_s'])
  # The roofline columns' FLOPs come from XLA's cost analysis of the compiled step (per
  # device; the tests' batch is split over 8): at least the LSTM input projection's
  # forward and weight-gradient GEMMs.
  import jax
  assert out['gflop'] * jax.device_count() >= 2 * 2 * 8 * 50 * 768 * 4 * 128 / 1e9


def test_gemm_rate_is_measured_for_both_frameworks():
  pytest.importorskip('torch', reason="PyTorch is a benchmark-only extra ('.[bench]')")
  out = _bench().bench_gemm(repeats=1)
  assert set(out['by_framework']) == {'jax', 'torch'}
  assert out['gflops'] == max(out['by_framework'].values()) > 0


@pytest.mark.parametrize('model', ['tfn', 'lmf'])
def test_torch_mirror_matches_parameter_count(model):
  torch = pytest.importorskip('torch', reason="PyTorch is a benchmark-only extra ('.[bench]')")
  bench = _bench()
  mirror = bench._torch_models()[model](bench.SIZES[model])
  total = sum(p.numel() for p in mirror.parameters())
  batchnorm = sum(p.numel() for m in mirror.modules() if isinstance(m, torch.nn.BatchNorm1d)
                  for p in m.parameters())
  lstm_second_bias = 4 * bench.SIZES[model]['hidden'][0]  # PyTorch keeps b_ih and b_hh
  import jax
  from affectjax import config as config_lib
  from affectjax import sharding
  from affectjax import experiment
  overrides = ['model.subnet_depth=3', 'mesh.data=-1']
  s = bench.SIZES[model]
  overrides += [f'model.hidden={{"text": {s["hidden"][0]}, "audio": {s["hidden"][1]}, '
                f'"vision": {s["hidden"][2]}}}', f'model.lstm_out={{"text": {s["text_out"]}}}']
  overrides += ([f'model.post_fusion_dim={s["post_fusion"]}'] if model == 'tfn' else
                [f'model.rank={s["rank"]}', 'model.fusion_dim=1'])
  config = config_lib.load(os.path.join(REPO, 'configs', f'mosi.py:{model}'), overrides)
  spec = {'text': ((bench.SEQ, bench.TEXT_DIM), np.float32),
          'audio': ((bench.AUDIO_DIM,), np.float32),
          'vision': ((bench.VISION_DIM,), np.float32), 'label': ((), np.float32)}
  exp = experiment.Experiment(config, sharding.make_mesh(config.mesh, jax.devices()[:1]), spec,
                              ('text', 'audio', 'vision'))
  # affectjax's LMF maps its 1-d fusion output through a 1x1 linear layer (2 parameters).
  extra = 2 if model == 'lmf' else 0
  assert total - batchnorm - lstm_second_bias == exp.num_params - extra


def test_erc_benchmark_dialogues_and_affectjax_epoch(monkeypatch):
  bench = _script('erc_speed')
  lengths, speakers = bench.dialogues()
  assert len(lengths) == len(speakers) == 108
  assert all(len(s) == n and s.max() < bench.SPEAKERS for n, s in zip(lengths, speakers))
  # Three short dialogues keep the timed epoch to one padded batch.
  monkeypatch.setattr(bench, 'dialogues', lambda seed=0: ([5, 9, 3], [
      np.array([0, 1, 0, 1, 1]), np.zeros(9, np.int32), np.array([1, 0, 0])]))
  out = bench.bench_affectjax('dialoguegcn', epochs=1)
  assert out['dialogues'] == 3 and out['epoch_s'] > 0 and out['peak_mb'] > 0


def test_ssm_scan_sweep_runs_and_mirror_has_affectjax_sizes():
  bench = _script('ssm_scan')
  rows = bench.sweep_lengths([64, 256], max_run_gib=1.0, repeats=1)
  assert {r['kind'] for r in rows} == set(bench.KINDS)
  assert all(r['tokens_per_s'] > 0 for r in rows)
  for kind in bench.KINDS:  # A longer sequence needs more memory.
    small, big = [r['bytes'] for r in rows if r['kind'] == kind]
    assert big > small
  out = bench.bench_affectjax(length=32, batch=2, steps=1)
  assert out['tokens_per_s'] > 0
  pytest.importorskip('torch', reason="PyTorch is a benchmark-only extra ('.[bench]')")
  mirror = bench.torch_mirror()
  assert sum(p.numel() for p in mirror.parameters()) == out['params']
  import torch
  y = mirror(torch.randn(2, 11, bench.WIDTH))
  assert y.shape == (2, 11, bench.WIDTH) and torch.isfinite(y).all()


@pytest.mark.parametrize('unbind', [False, True])
def test_ssm_mirror_computes_the_affectjax_block(unbind):
  """With affectjax's weights copied in, the PyTorch mirror (either loop) gives the
  same outputs."""
  torch = pytest.importorskip('torch', reason="PyTorch is a benchmark-only extra ('.[bench]')")
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  bench = _script('ssm_scan')
  block = bench._block('mamba')
  x = np.random.default_rng(0).normal(size=(2, 13, bench.WIDTH)).astype(np.float32)
  mask = np.ones((2, 13), np.float32)
  params = nn.unbox(block.init(jax.random.key(0), jnp.asarray(x), mask, train=False))
  p = jax.tree.map(lambda v: torch.tensor(np.asarray(v)), params['params'])
  m = bench.torch_mirror(unbind)
  f = p['forward']
  with torch.no_grad():
    m.norm.weight.copy_(p['norm']['scale'])
    m.in_proj.weight.copy_(f['in_proj']['kernel'].T)
    m.conv1d.weight.copy_(f['conv_kernel'].T[:, None, :])
    m.conv1d.bias.copy_(f['conv_bias'])
    m.x_proj.weight.copy_(f['x_proj']['kernel'].T)
    m.dt_proj.weight.copy_(f['dt_proj']['kernel'].T)
    m.dt_proj.bias.copy_(f['dt_proj']['bias'])
    m.A_log.copy_(f['A_log'])
    m.D.copy_(f['D'])
    m.out_proj.weight.copy_(f['out_proj']['kernel'].T)
    m.norm.eps = 1e-6  # flax's RMSNorm epsilon.
    expected = m(torch.tensor(x)).numpy()
  got = np.asarray(block.apply(params, x, mask, train=False))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_mae_mirror_has_the_affectjax_parameter_count_and_both_sides_train():
  """The PyTorch AudioMAE-style mirror is the same model: equal parameter counts at every
  benchmarked size, and one step of each side gives a finite loss on the same input."""
  pytest.importorskip('torch', reason="PyTorch is a benchmark-only extra ('.[bench]')")
  bench = _script('mae_speed')
  for size in sorted({s for s, _ in bench.ROWS}):
    exp, _ = bench.affectjax_experiment(size)
    mirror = bench.torch_mirror(size)
    assert sum(p.numel() for p in mirror.parameters()) == exp.num_params, size
  jx = bench.bench_affectjax('tiny', 8, steps=1, warmup=0)
  pt = bench.bench_torch('tiny', 8, steps=1, warmup=0, compiled=False)
  assert jx['params'] == pt['params'] and jx['step_ms'] > 0 and pt['step_ms'] > 0
  # FLOPs of the compiled one-device step: at least the decoder's MLP over every token,
  # forward and both gradients.
  width = bench._sizes('tiny')[3]
  assert jx['gflop'] >= 3 * 2 * 2 * 8 * 200 * width * 4 * width / 1e9
  # The attention table times the decoder's self-attention shape on all three forms.
  shape = (2, 200, bench._sizes('tiny')[5], width // bench._sizes('tiny')[5])
  for framework in bench.ATTENTION:
    out = bench.bench_attention('tiny', 2, framework, repeats=1)
    assert tuple(out['shape']) == shape and out['ms'] > 0, framework


def test_tpu_scale_halves_the_batch_after_a_host_out_of_memory_and_says_unknown(
    monkeypatch, capsys):
  """A compile worker killed by this host's OOM killer is no verdict on the TPU: the row
  says 'unknown' under the slice's name, and half the batch per chip is compiled next."""
  scale = _script('tpu_scale')
  asked = []
  fitted = {'kind': 'TPU v5 lite', 'slice': 'v5e-8', 'chips': 8, 'mesh': {'fsdp': 8},
            'batch': 128, 'params': 7e8, 'param_bytes': 2**28, 'opt_bytes': 2**29,
            'state_bytes': 2**30, 'temp_bytes': 13 * 2**30, 'peak_bytes': 15 * 2**30,
            'flops': 7e12, 'bytes_accessed': 1e12, 'compile_s': 300.0}

  def measure(name, topology, per_chip, fresh):
    asked.append(per_chip)
    out = ({'error': 'worker killed by signal 9 (SIGKILL: host memory ran out?)'}
           if per_chip == 32 else dict(fitted))
    return dict(out, name=name, topology=topology, per_chip=per_chip)
  monkeypatch.setattr(scale, '_measure', measure)
  assert scale.main(['--entries', 'audio-visual MAE large', '--topologies', 'v5e:2x4']) == 0
  out = capsys.readouterr().out
  assert asked == [32, 16]
  assert ('| audio-visual MAE large | v5e-8 (v5e:2x4) | | 32/chip |' in out
          and 'unknown: this host ran out of memory compiling it' in out)
  assert '| audio-visual MAE large | v5e-8 (v5e:2x4) | fsdp 8 | 128 |' in out


def test_speech_encoder_benchmark_table_ratios_floors_and_errors():
  bench = _script('speech_encoders')
  rows = [
      {'model': 'whisper-base', 'kind': 'features', 'framework': 'affectjax', 'batch': 8,
       'clips_per_s': 8.0, 'seconds': 1.0, 'floor_s': 0.25},
      {'model': 'whisper-base', 'kind': 'features', 'framework': 'ctranslate2', 'batch': 8,
       'clips_per_s': 12.0, 'seconds': 0.667},
      {'model': 'wavlm-base', 'kind': 'features', 'framework': 'torch', 'batch': 8,
       'error': 'no module named transformers'},
  ]
  text = bench.render(rows, {'gflops': 100.0, 'by_framework': {'jax': 100.0}}, 60.0)
  assert text.startswith(bench.START) and text.endswith(bench.END)
  assert '| whisper-base | feature extraction | 8 | affectjax | 8.0 | 1.00x | 4.0x |' in text
  assert '| whisper-base | feature extraction | 8 | ctranslate2 | 12.0 | 1.50x |  |' in text
  assert '| wavlm-base | features | 8 | torch | error: no module named transformers | | |' in text
