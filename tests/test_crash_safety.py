"""A run killed, signalled, locked out, out of disk or given corrupt checkpoints at any of
the instants that matter ends, once rerun, exactly as the uninterrupted run.

The kill harness stops the trainer at the named points of `affectjax.faults` (in this
process, by raising at the point, and for real with SIGKILL/SIGTERM/SIGINT in a CLI
subprocess) and compares final parameters bitwise, results.json and metrics.jsonl.
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import errors
from affectjax import faults
from affectjax import main as main_lib
from affectjax import train
from affectjax import experiment
from affectjax import workdir as workdir_lib
from conftest import REPO, config_path, saved_state

STEPS = 30
# Validation loss selects (it falls at every evaluation here), so each evaluation writes a
# best checkpoint and every best/latest interleaving is exercised.
OVERRIDES = [f'train.num_steps={STEPS}', 'train.eval_every=10', 'train.log_every=5',
             'data.num_train=256', 'mesh.model=2', 'train.select_metric=loss',
             'train.select_mode=min']


def _config(*extra):
  return config_lib.load(config_path('synthetic.py:tfn,redundant,smoke'), [*OVERRIDES, *extra])


def _final_state(workdir):
  path = os.path.join(workdir, 'checkpoints', 'latest', str(STEPS), 'state')
  return jax.tree.leaves(saved_state(path))


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    r = json.load(f)
  r.pop('timing')
  return r


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return f.read()


def assert_same_run(a, b):
  """Final parameters and optimizer state bitwise, results.json and metrics.jsonl equal,
  and nothing left over: no temporaries, no extra checkpoints."""
  leaves_a, leaves_b = _final_state(a), _final_state(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert _results(a) == _results(b)
  assert _metrics(a) == _metrics(b)
  leftovers = [n for n in os.listdir(b) if '.tmp' in n]
  for kind in ('latest', 'best'):
    leftovers += [f'{kind}/{n}' for n in os.listdir(os.path.join(b, 'checkpoints', kind))
                  if not n.isdigit()]
  assert not leftovers
  assert sorted(os.listdir(os.path.join(a, 'checkpoints', 'best'))) == \
      sorted(os.listdir(os.path.join(b, 'checkpoints', 'best')))


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('straight') / 'run'
  train.train_and_evaluate(_config(), str(workdir))
  return workdir


class _Kill(BaseException):
  """Stands for SIGKILL inside this process: nothing catches it."""


@contextlib.contextmanager
def _killed_at(monkeypatch, name, count=1):
  seen = []

  def point(p):
    if p == name:
      seen.append(p)
      if len(seen) == count:
        raise _Kill(p)

  monkeypatch.setattr(faults, 'point', point)
  with pytest.raises(_Kill):
    yield
  monkeypatch.setattr(faults, 'point', lambda p: None)


@contextlib.contextmanager
def _killed_inside_orbax_save(monkeypatch, kind):
  """Dies while orbax writes a step: its temporary directory is half full."""
  real = ocp.Checkpointer.save

  def save(self, path, *args, **kwargs):
    if os.path.basename(os.path.dirname(str(path))) != kind:
      return real(self, path, *args, **kwargs)
    tmp = f'{path}.orbax-checkpoint-tmp-1234'
    os.makedirs(os.path.join(tmp, 'state'))
    with open(os.path.join(tmp, 'state', 'manifest.ocdbt'), 'wb') as f:
      f.write(b'\x00' * 100)
    raise _Kill('orbax save')

  monkeypatch.setattr(ocp.Checkpointer, 'save', save)
  with pytest.raises(_Kill):
    yield
  monkeypatch.setattr(ocp.Checkpointer, 'save', real)


# Each kill point in turn; the run is rerun after each one, so the chain resumes from
# every state a kill there leaves (with eval_every=10: the first evaluation is step 10).
KILL_POINTS = [
    ('compiled', 1),  # Before anything is written.
    ('step', 3),  # Training, before any checkpoint.
    ('metrics_half_written', 1),  # A half line in metrics.jsonl at step 10.
    ('metrics_written', 1),  # Step 10 recorded, no checkpoint yet.
    ('best_saved', 1),  # best/10 written, latest/10 not ("already exists" before).
    ('orbax:latest', 1),  # Inside the save of latest/10.
    ('latest_saved', 1),  # latest/10 written, older ones not yet dropped.
    ('evaluating', 1),  # Inside the evaluation at step 20.
    ('orbax:best', 1),  # Inside the save of best/20.
    ('best_saved', 1),  # best/20 beside best/10, latest/20 not written.
    ('latest_saved', 2),  # latest/30 written, before the final evaluation.
    ('results_tmp_written', 1),  # results.json half written.
]


def test_kill_at_every_point_resumes_exactly(tmp_path, straight, monkeypatch):
  workdir = str(tmp_path / 'run')
  done = []
  for name, count in KILL_POINTS:
    if name.startswith('orbax:'):
      context = _killed_inside_orbax_save(monkeypatch, name.split(':')[1])
    else:
      context = _killed_at(monkeypatch, name, count)
    with context:
      train.train_and_evaluate(_config(), workdir)
    assert not os.path.exists(os.path.join(workdir, 'results.json')), (name, count)
    done.append(name)
  train.train_and_evaluate(_config(), workdir)
  assert len(done) == len(KILL_POINTS)
  assert_same_run(straight, workdir)


def _cli(workdir, fault=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  env.pop('AFFECTJAX_FAULT', None)
  if fault:
    env['AFFECTJAX_FAULT'] = fault
  if fault and fault.startswith('compiling'):
    # A real compile (the session's cache would return the executable at once): the
    # signal must land while XLA's threads work.
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
  cmd = [sys.executable, '-m', 'affectjax.main', 'train', '--config',
         config_path('synthetic.py:tfn,redundant,smoke'), '--workdir', str(workdir),
         *[f'--config.{o}' for o in OVERRIDES]]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  return proc.returncode, proc.stderr


def test_signals_and_real_kills_resume_exactly(tmp_path, straight):
  """The CLI under real signals: SIGTERM before training (nothing to save), SIGTERM at
  step 13 (saves step 13, exit 3), a double SIGINT (aborts at once), SIGKILL while
  results.json is written (its temporary is left, and cleaned by the rerun)."""
  workdir = tmp_path / 'run'
  # Inside the first compile (XLA's threads still at work): held until it returns, then
  # the same clean stop; raised at once it crashed the interpreter's exit (139).
  for fault in ('compiling=SIGTERM+0.3', 'compiled=SIGTERM'):
    code, err = _cli(workdir, fault)
    assert code == errors.EXIT_INTERRUPTED, (fault, err[-2000:])
    assert err.strip().splitlines()[-1] == (
        'affectjax: stopped: SIGTERM before training started; nothing to save, rerun the '
        'same command to start')
    assert not workdir.exists()

  code, err = _cli(workdir, 'step@13=SIGTERM')
  assert code == errors.EXIT_INTERRUPTED, err[-2000:]
  assert err.strip().splitlines()[-1] == (
      'affectjax: stopped: SIGTERM at step 13: saved a checkpoint of step 13; rerun the '
      'same command to resume')
  assert 'Traceback' not in err
  assert sorted(os.listdir(workdir / 'checkpoints' / 'latest')) == ['10', '13']

  code, err = _cli(workdir, 'step@2=SIGINT*2')  # Resumed at 13: the signals come at 15.
  assert code == 128 + signal.SIGINT
  assert err.strip().splitlines()[-1].startswith('affectjax: second SIGINT: aborted at once')

  code, err = _cli(workdir, 'results_tmp_written=SIGKILL')
  assert code == -signal.SIGKILL
  assert [n for n in os.listdir(workdir) if n.startswith('.tmp-results.json')]

  code, err = _cli(workdir)
  assert code == 0, err[-2000:]
  assert_same_run(straight, workdir)


# -- corrupt checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope='module')
def unfinished(tmp_path_factory):
  """A run killed right after saving latest/20: latest/{10,20}, best/20."""
  workdir = tmp_path_factory.mktemp('unfinished') / 'run'
  with pytest.MonkeyPatch.context() as mp:
    with _killed_at(mp, 'latest_saved', 2):
      train.train_and_evaluate(_config(), str(workdir))
  dataset, exp = experiment.setup(_config())
  del dataset
  return workdir, exp


def _files(path, under):
  out = []
  for root, _, names in os.walk(os.path.join(path, under)):
    out += [os.path.join(root, n) for n in names]
  return sorted(out, key=os.path.getsize)


def _flip_bytes(path):
  big = _files(path, 'state')[-1]
  with open(big, 'r+b') as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    f.seek(0)
    f.write(data)


def _truncate_state(path):
  big = _files(path, 'state')[-1]
  with open(big, 'r+b') as f:
    f.truncate(os.path.getsize(big) // 3)


def _edit_iterator(path):
  meta = os.path.join(path, 'data', 'metadata')
  with open(meta) as f:
    state = json.load(f)
  text = json.dumps(state)
  digits = [c for c in text if c.isdigit()]
  assert digits
  # Change the first number: another position in the data stream (still valid JSON).
  i = next(i for i, c in enumerate(text) if c.isdigit())
  text = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]
  with open(meta, 'w') as f:
    f.write(text)


def _break_meta(path):
  with open(os.path.join(path, 'meta', 'metadata'), 'w') as f:
    f.write('{"best_value": 0.5, "best_st')


def _meta_without_digest(path):
  """A meta edited to pass as an old checkpoint must still match its content."""
  p = os.path.join(path, 'meta', 'metadata')
  with open(p) as f:
    meta = json.load(f)
  meta['digest'] = {'state': '0' * 64, 'data': meta['digest']['data']}
  with open(p, 'w') as f:
    json.dump(meta, f)


CORRUPTIONS = {
    'flipped bytes in a state file': _flip_bytes,
    'truncated state file': _truncate_state,
    'every state file emptied': lambda p: [open(f, 'w').close() for f in _files(p, 'state')],
    'state deleted': lambda p: shutil.rmtree(os.path.join(p, 'state')),
    'meta half written': _break_meta,
    'meta deleted': lambda p: shutil.rmtree(os.path.join(p, 'meta')),
    'iterator state edited': _edit_iterator,
    'iterator state deleted': lambda p: shutil.rmtree(os.path.join(p, 'data')),
    'digest replaced': _meta_without_digest,
    'ocdbt manifest removed': lambda p: [os.remove(f) for f in _files(p, 'state')
                                         if f.endswith('manifest.ocdbt')],
    'emptied directory': lambda p: [shutil.rmtree(p), os.makedirs(p)],
    'replaced by a file': lambda p: [shutil.rmtree(p), open(p, 'w').close()],
}


@pytest.mark.parametrize('how', sorted(CORRUPTIONS))
def test_corrupt_newest_checkpoint_falls_back(tmp_path, unfinished, how, caplog):
  source, exp = unfinished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  newest = workdir / 'checkpoints' / 'latest' / '20'
  CORRUPTIONS[how](str(newest))
  ckpt = checkpoint_lib.Checkpoints(str(workdir))
  try:
    with caplog.at_level(logging.WARNING, logger='affectjax'):
      resume = ckpt.recover(exp.abstract_state, exp.abstract_state.params)
    assert resume is not None and resume.step == 10
    lines = [r.getMessage() for r in caplog.records if 'falling back' in r.getMessage()]
    assert len(lines) == 1 and 'latest/20' in lines[0], caplog.text
    assert not newest.exists() and (workdir / 'checkpoints' / 'corrupt' / 'latest-20').exists()
    # best/20 came after step 10; the rule keeps best/10, which latest/10 records.
    assert ckpt.steps('best') == [10] and ckpt.steps('latest') == [10]
  finally:  # Unclosed, orbax's managers were finalised later, after their event loop closed.
    ckpt.close()


def test_stray_step_directory_and_temporaries_do_not_block(tmp_path, unfinished, straight):
  source, _ = unfinished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  os.makedirs(workdir / 'checkpoints' / 'latest' / '999')
  os.makedirs(workdir / 'checkpoints' / 'best' / '7.orbax-checkpoint-tmp-99')
  (workdir / 'results.json.tmp.4242').write_text('{')
  _flip_bytes(str(workdir / 'checkpoints' / 'latest' / '20'))
  train.train_and_evaluate(_config(), str(workdir))
  assert_same_run(straight, workdir)
  assert sorted(os.listdir(workdir / 'checkpoints' / 'corrupt')) == ['latest-20', 'latest-999']


def test_corrupt_best_checkpoint_stops_with_one_line(tmp_path, unfinished, capsys):
  source, _ = unfinished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  for f in _files(str(workdir / 'checkpoints' / 'best' / '20'), 'params')[-1:]:
    with open(f, 'r+b') as fh:
      data = bytearray(fh.read())
      data[len(data) // 2] ^= 0xFF
      fh.seek(0)
      fh.write(data)
  # latest/20 needs best/20; latest/10 needs best/10, dropped here as the retention after
  # latest/20 does (the fixture was killed just before it).
  shutil.rmtree(workdir / 'checkpoints' / 'best' / '10')
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'),
                        '--workdir', str(workdir), *[f'--config.{o}' for o in OVERRIDES]])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == errors.EXIT_ERROR
  assert err[-1].startswith('affectjax: error: ') and 'checkpoints/latest' in err[-1]
  assert 'best checkpoint they refer to is corrupt' in err[-1]


def test_another_models_checkpoints_are_refused_not_trained_over(tmp_path, unfinished, capsys):
  """Checkpoints of another model copied into a workdir are not corrupt (moved aside, the
  run restarted from 0 with exit 0): they are not this run's, and the run stops."""
  source, _ = unfinished
  workdir = tmp_path / 'run'
  shutil.copytree(source / 'checkpoints', workdir / 'checkpoints')
  listing = lambda: sorted(str(p.relative_to(workdir)) for p in workdir.rglob('*')  # noqa: E731
                           if p.name != workdir_lib.LOCK_NAME)  # The lock file stays.
  before = listing()
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'),
                        '--workdir', str(workdir), *[f'--config.{o}' for o in OVERRIDES],
                        '--config.model.post_fusion_dim=32'])  # Another shape.
  err = capsys.readouterr().err.strip().splitlines()
  assert code == errors.EXIT_ERROR and err[-1].startswith('affectjax: error: '), err
  assert 'checkpoints/latest/20: a checkpoint of another model' in err[-1], err
  assert listing() == before  # Nothing moved, deleted or written.


def test_a_workdir_deleted_during_the_run_stops_it_with_one_line(tmp_path, monkeypatch, capsys):
  """`rm -rf WORKDIR` between the best and the latest checkpoint of step 10: orbax
  recreates the folder for the latest one, which would leave a 'finished' run without its
  config, run card or first metrics. The run stops instead."""
  workdir = tmp_path / 'run'

  def point(p):
    if p == 'best_saved' and (workdir / 'config.json').exists():
      shutil.rmtree(workdir)
  monkeypatch.setattr(faults, 'point', point)
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'),
                        '--workdir', str(workdir), *[f'--config.{o}' for o in OVERRIDES]])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == errors.EXIT_ERROR and err[-1].startswith('affectjax: error: '), err
  assert 'the workdir was deleted or replaced during the run' in err[-1], err
  assert not (workdir / 'results.json').exists()


# -- the lock, a full disk, failures before the first checkpoint ----------------------------


def test_second_process_is_refused_and_stale_lock_taken_over(tmp_path, capsys, caplog):
  workdir = tmp_path / 'run'
  os.makedirs(workdir)
  args = ['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'), '--workdir',
          str(workdir), *[f'--config.{o}' for o in OVERRIDES], '--config.train.num_steps=10']
  with workdir_lib.lock(str(workdir)):
    assert main_lib.main(args) == errors.EXIT_ERROR
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert f'in use by another run (pid {os.getpid()} on host ' in err
  assert sorted(os.listdir(workdir)) == ['.lock']
  # A lock file left by a process that died: taken over, with a warning naming it.
  (workdir / '.lock').write_text('pid 999999 on host elsewhere')
  with caplog.at_level(logging.WARNING, logger='affectjax'):
    assert main_lib.main(args) == 0
  assert 'taking over the lock left by pid 999999 on host elsewhere' in caplog.text


def _tmpfs(path, size):
  try:
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                   check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError):
    return False
  return True


def test_disk_full_is_one_line_and_resumes_exactly(tmp_path, straight, capsys, monkeypatch):
  """A workdir on a 6 MB tmpfs fills up at the second evaluation's checkpoint (each latest
  checkpoint is ~3.6 MB); after more space the rerun ends as the uninterrupted run.
  Where mounting is not allowed, orbax's write fails with ENOSPC instead."""
  mnt = tmp_path / 'small'
  mnt.mkdir()
  mounted = _tmpfs(mnt, '6m')
  if not mounted:
    import errno
    real = ocp.Checkpointer.save
    calls = []

    def full(self, path, *args, **kwargs):
      calls.append(path)
      if len(calls) == 3:
        raise OSError(errno.ENOSPC, 'No space left on device')
      return real(self, path, *args, **kwargs)
    monkeypatch.setattr(ocp.Checkpointer, 'save', full)
  try:
    workdir = mnt / 'run'
    args = ['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'), '--workdir',
            str(workdir), *[f'--config.{o}' for o in OVERRIDES]]
    assert main_lib.main(args) == errors.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('affectjax: error: '), err
    assert 'no space left on device' in err[0] and str(workdir) in err[0]
    for kind in ('latest', 'best'):
      left = os.listdir(workdir / 'checkpoints' / kind)
      assert all(n.isdigit() for n in left), (kind, left)
    if mounted:
      subprocess.run(['mount', '-o', 'remount,size=64m', str(mnt)], check=True)
    else:
      monkeypatch.setattr(ocp.Checkpointer, 'save', real)
    assert main_lib.main(args) == 0
    assert_same_run(straight, workdir)
  finally:
    if mounted:  # Lazily when busy (a writer thread of the failed save may hold a file).
      if subprocess.run(['umount', str(mnt)], capture_output=True).returncode:
        subprocess.run(['umount', '-l', str(mnt)], check=False)


def test_disk_full_while_preparing_a_dataset_is_one_line_and_leaves_nothing(
    tmp_path, capsys, monkeypatch):
  """The prepared-data folder on a 300 kB tmpfs (the MOSI-layout file prepares to ~0.8 MB):
  one line naming the folder, no lock, temporary or empty folder left; with space, the
  same command prepares it. Where mounting is not allowed, array_record's writer fails
  as it does on a full disk."""
  import numpy as np
  from test_bad_inputs import mosi_arrays
  data = tmp_path / 'data' / 'mosi'
  data.mkdir(parents=True)
  np.savez(data / 'mosi_utterances.npz', **mosi_arrays(train_videos=60, per_video=10))
  mnt = tmp_path / 'small'
  mnt.mkdir()
  mounted = _tmpfs(mnt, '300k')
  if not mounted:
    from tensorflow_datasets.core import file_adapters
    real = file_adapters.ArrayRecordFileAdapter.write_examples

    def full(*args, **kwargs):
      raise RuntimeError('Failed to finalize writing of split "train": write() failed: No '
                         'space left on device; Failed to close chunk_writer')
    monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, 'write_examples', full)
  try:
    tfds_dir = mnt / 'tfds'
    args = ['train', '--config', config_path('mosi.py:tfn,smoke'), '--workdir',
            str(tmp_path / 'run'), f'--config.data.dir={tmp_path / "data"}',
            f'--config.data.tfds_dir={tfds_dir}', '--config.train.num_steps=2']
    assert main_lib.main(args) == errors.EXIT_ERROR
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith('affectjax: ')]
    assert len(err) == 1 and err[0].startswith('affectjax: error: '), err
    assert 'no space left on device' in err[0] and str(tfds_dir) in err[0], err
    assert not list(mnt.rglob('*')), list(mnt.rglob('*'))
    assert not (tmp_path / 'run').exists()
    if mounted:
      subprocess.run(['mount', '-o', 'remount,size=64m', str(mnt)], check=True)
    else:
      monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, 'write_examples', real)
    assert main_lib.main(args) == 0
  finally:
    if mounted and subprocess.run(['umount', str(mnt)], capture_output=True).returncode:
      subprocess.run(['umount', '-l', str(mnt)], check=False)


def test_tensorboard_close_does_not_hide_the_error_that_named_the_file(tmp_path, capsys,
                                                                      monkeypatch):
  """On a full disk the checkpoint write fails (its path in the message) and then the
  TensorBoard writer's close fails too: the user sees the first, not a bare errno."""
  import errno
  from tensorboardX import SummaryWriter
  real = ocp.Checkpointer.save
  calls = []

  def full(self, path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real(self, path, *args, **kwargs)

  def close(self):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ocp.Checkpointer, 'save', full)
  monkeypatch.setattr(SummaryWriter, 'close', close)
  workdir = tmp_path / 'run'
  args = ['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'), '--workdir',
          str(workdir), *[f'--config.{o}' for o in OVERRIDES]]
  assert main_lib.main(args) == errors.EXIT_ERROR
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'no space left on device' in err[0], err
  assert str(workdir / 'checkpoints') in err[0], err


def test_failure_before_the_first_checkpoint_does_not_pin_the_config(tmp_path, capsys):
  """A run that stopped before its first checkpoint holds no progress: the corrected
  command is not refused as 'a different config'."""
  workdir = tmp_path / 'run'
  args = ['train', '--config', config_path('synthetic.py:tfn,redundant,smoke'), '--workdir',
          str(workdir), *[f'--config.{o}' for o in OVERRIDES]]
  os.makedirs(workdir)
  config_lib.save(_config('optim.learning_rate=0.5'), str(workdir / 'config.json'))
  assert main_lib.main(args + ['--config.train.num_steps=10']) == 0
  assert main_lib.main(args + ['--config.train.num_steps=10', '--config.seed=3']) == 2
  assert 'different config (first difference: seed)' in capsys.readouterr().err


def test_divergence_never_names_a_bad_checkpoint(tmp_path):
  """With evaluations (and checkpoints) at every step, a learning rate that blows up the
  parameters is stopped before any non-finite state is saved, and the message names
  only a checkpoint that is finite, or says that there is none."""
  config = _config('optim.learning_rate=1e30', 'optim.grad_clip=0.0', 'train.eval_every=1',
                   'train.log_every=1')
  workdir = tmp_path / 'run'
  with pytest.raises(train.NonFiniteLossError) as e:
    train.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  latest = workdir / 'checkpoints' / 'latest'
  steps = sorted(int(n) for n in os.listdir(latest)) if latest.exists() else []
  if not steps:
    assert 'No checkpoint was saved before it' in message and 'step None' not in message
  else:
    assert f'Last good checkpoint: step {steps[-1]} in ' in message
    for s in steps:
      state = saved_state(workdir / f'checkpoints/latest/{s}/state')
      assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_non_finite_state_is_never_saved(tmp_path, unfinished):
  _, exp = unfinished
  ckpt = checkpoint_lib.Checkpoints(str(tmp_path))
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), exp.abstract_state)
  bad = state.replace(params=jax.tree.map(lambda x: x + np.nan, state.params))
  try:
    with pytest.raises(train.NonFiniteLossError, match='non-finite parameters at step 8; '
                       'not saved. No checkpoint was saved before it'):
      ckpt.save(8, bad, {}, {'best_value': None, 'best_step': None})
    with pytest.raises(train.NonFiniteLossError, match='non-finite parameters at step 8'):
      ckpt.save_best(8, bad.params, {'step': 8})
    assert ckpt.steps('latest') == [] and ckpt.steps('best') == []
  finally:
    ckpt.close()
