"""Ahead-of-time compilation of the real train step for Cloud TPU slices (no TPU needed)."""

import importlib.util
import os

import pytest

from affectjax import compile as compile_lib
from affectjax import config as config_lib
from affectjax import main as main_lib
from conftest import config_path

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('libtpu') is None,
    reason="libtpu is not installed (pip install -e '.[tpu]')")


def test_tfn_train_step_compiles_for_v5e_2x4(capsys):
  code = main_lib.main(['compile', '--config', config_path('synthetic.py:tfn'),
                        '--topology', 'v5e:2x4', '--config.mesh.model=2'])
  out = capsys.readouterr().out
  assert code == 0
  assert "mesh {'data': 4, 'fsdp': 1, 'model': 2}" in out and 'TPU v5' in out
  assert 'FLOPs per step' in out and 'peak bytes per device' in out


@pytest.mark.parametrize('topology, devices', [('v5p:2x2x1', 4), ('v4:2x2x1', 8)])
def test_lmf_report_numbers(topology, devices):
  config = config_lib.load(config_path('synthetic.py:lmf'), ['mesh.model=2'])
  report = compile_lib.compile_for_topology(config, topology)
  assert report['num_devices'] == devices
  assert report['mesh'] == {'data': devices // 2, 'fsdp': 1, 'model': 2}
  assert report['flops_per_step'] > 0 and report['peak_bytes_per_device'] > 0


def test_cli_hides_libtpus_complaints_on_a_machine_without_tpus():
  """libtpu (the `tpu` extra) without a TPU prints a screen of metadata-server errors from
  C++ on every start; the CLI drops them unless AFFECTJAX_LIBRARY_LOGS=1 asks for them."""
  import subprocess
  import sys
  from conftest import REPO
  if os.path.exists('/dev/vfio') or any(n.startswith('accel') for n in os.listdir('/dev')):
    pytest.skip('this machine has TPUs')
  cmd = [sys.executable, '-m', 'affectjax', 'compile', '--config',
         config_path('synthetic.py:tfn,smoke'), '--topology', 'v5e:2x4']
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'XLA_FLAGS')}
  errs = {}
  for logs in ('0', '1'):
    proc = subprocess.run(cmd, cwd=REPO, env={**env, 'AFFECTJAX_LIBRARY_LOGS': logs},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'compiled train step for v5e:2x4' in proc.stdout
    errs[logs] = proc.stderr
  assert 'TPU' not in errs['0'] and 'libtpu' not in errs['0'], errs['0']
  assert 'TPU' in errs['1']  # What the quiet run hid.


@pytest.mark.parametrize('size, fragment', [
    ('3', "--batch-size 3: not divisible by the batch's mesh axes on v5e:2x4 (data x fsdp: 8"),
    ('-4', '--batch-size -4: must be positive')])
def test_a_batch_the_slice_cannot_split_is_one_line(size, fragment, capsys):
  code = main_lib.main(['compile', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--topology', 'v5e:2x4', '--batch-size', size])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err


def test_unknown_topology_is_one_line(capsys):
  code = main_lib.main(['compile', '--config', config_path('synthetic.py:tfn'),
                        '--topology', 'v99:9x9'])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith('affectjax: error: --topology v99:9x9')
  assert len(err.splitlines()) == 1


def test_contrastive_pretraining_step_compiles_for_v5e_2x4(capsys):
  code = main_lib.main(['compile', '--config', config_path('ravdess_contrastive.py:fold1'),
                        '--topology', 'v5e:2x4'])
  out = capsys.readouterr().out
  assert code == 0 and "mesh {'data': 8, 'fsdp': 1, 'model': 1}" in out and 'TPU v5' in out


def test_audio_mae_pretraining_step_compiles_for_v5e_2x4(capsys):
  """The masked autoencoder (masking stream, fused attention, model-sharded heads) lowers
  for a TPU slice (tiny size: the base size takes minutes to compile here)."""
  code = main_lib.main(['compile', '--config', config_path('ravdess_audiomae.py:fold1'),
                        '--topology', 'v5e:2x4', '--config.mesh.model=2'])
  out = capsys.readouterr().out
  assert code == 0 and "mesh {'data': 4, 'fsdp': 1, 'model': 2}" in out and 'TPU v5' in out


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.environ.get('AFFECTJAX_DATA_DIR', ''),
                                                   'videos')), reason='real data absent: '
                    'set AFFECTJAX_DATA_DIR to the folder holding videos/')
def test_audio_visual_mae_pretraining_step_compiles_for_v5e_2x4(capsys, tmp_path):
  """HiCMAE-style pretraining (two encoders, fusion, skip-connected decoders, the
  hierarchical InfoNCE) lowers for a TPU slice with model-sharded heads."""
  code = main_lib.main(['compile', '--config', config_path('clips_mae.py:av,videos'),
                        '--topology', 'v5e:2x4', '--config.mesh.model=2',
                        f'--config.data.tfds_dir={tmp_path}'])
  out = capsys.readouterr().out
  assert code == 0 and "mesh {'data': 4, 'fsdp': 1, 'model': 2}" in out and 'TPU v5' in out


def test_fsdp_cuts_the_per_device_state_the_compile_report_shows():
  """The audio MAE (tiny) for v5e-8: parameters and Adam moments split 8 ways with
  fsdp=8 instead of replicated with data=8; the compiled step's arguments shrink alike."""
  spec = config_path('ravdess_audiomae.py:fold1')
  reports = {}
  for axes in (['mesh.data=8'], ['mesh.data=1', 'mesh.fsdp=8']):
    config = config_lib.load(spec, axes)
    reports[axes[-1]] = compile_lib.compile_for_topology(config, 'v5e:2x4')
  dp, fsdp = reports['mesh.data=8'], reports['mesh.fsdp=8']
  assert fsdp['mesh'] == {'data': 1, 'fsdp': 8, 'model': 1}
  assert fsdp['num_params'] == dp['num_params']
  for field in ('param_bytes_per_device', 'opt_state_bytes_per_device'):
    assert fsdp[field] < dp[field] / 4, field  # Small biases and norms stay whole.
  assert fsdp['argument_size_in_bytes'] < dp['argument_size_in_bytes'] / 2
