"""One end-to-end run of the real CLI per model, on 8 virtual devices."""

import glob
import json
import os
import sys

import pytest

from affectjax import main as main_lib
from conftest import REPO, config_path


@pytest.mark.parametrize('name, variant', [
    ('synthetic.py:early', 'redundant'),
    ('synthetic.py:late', 'unique'),
    ('synthetic.py:tfn', 'synergy'),
    ('synthetic.py:lmf', 'synergy,regression'),
])
def test_cli_train_writes_everything(tmp_path, capsys, tiny_overrides, name, variant):
  workdir = tmp_path / 'run'
  code = main_lib.main(['train', '--config', config_path(f'{name},{variant}'),
                        '--workdir', str(workdir), '--config.mesh.model=2',
                        *[f'--config.{o}' for o in tiny_overrides]])
  assert code == 0
  headline = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  results = json.loads((workdir / 'results.json').read_text())
  assert set(results) >= {'valid', 'test', 'config', 'seed'}
  assert results['config'] == f'{name.replace(".py", "")},{variant}' and results['seed'] == 0
  key = 'mse' if 'regression' in variant else 'accuracy'
  assert headline['test'][key] == pytest.approx(results['test'][key], abs=1e-4)
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [6, 12]
  assert json.loads((workdir / 'config.json').read_text())['mesh']['model'] == 2
  events = glob.glob(str(workdir / 'tensorboard' / '**' / 'events.out.tfevents.*'),
                     recursive=True)
  data = b''.join(open(f, 'rb').read() for f in events)
  for tag in ('train/loss', 'train/learning_rate', 'train/examples_per_s',
              f'best/test/{key}', f'hparam/best/valid/{key}'):
    assert tag.encode() in data, tag
  assert (workdir / 'checkpoints' / 'latest' / '12').is_dir()
  # The curves as a figure: loss and the selection metric per evaluated step.
  assert (workdir / 'curves.png').read_bytes()[:4] == b'\x89PNG'
  # What the numbers came from: versions, commit (in a checkout), devices, data.
  import jax
  from affectjax import __version__
  p = results['provenance']
  assert p['affectjax'] == __version__ and p['jax'] == jax.__version__
  assert p['devices'] == f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  assert p['dataset'] and p['flax']
  if os.path.isdir(os.path.join(REPO, '.git')):
    assert len(p['git']['commit']) == 40


def test_rerun_with_other_config_is_refused(tmp_path, capsys, tiny_overrides):
  args = ['train', '--config', config_path('synthetic.py:tfn'), '--workdir', str(tmp_path),
          *[f'--config.{o}' for o in tiny_overrides]]
  assert main_lib.main(args) == 0
  assert main_lib.main(args + ['--config.seed=3']) == 2
  err = capsys.readouterr().err
  assert 'different config (first difference: seed)' in err
  # A run recorded before optim.groups existed matches a config that leaves it empty (the
  # old behaviour), and only such a config; one recorded with the since removed
  # optim.pretrained_learning_rate at 0 matches too.
  stored = json.loads((tmp_path / 'config.json').read_text())
  del stored['optim']['groups']
  stored['optim']['pretrained_learning_rate'] = 0.0
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  assert main_lib.main(args) == 0
  assert main_lib.main(args + ['--config.optim.groups=(("tfn/.*",0.5),)']) == 2
  assert 'first difference: optim.groups' in capsys.readouterr().err
  stored['optim']['pretrained_learning_rate'] = 1e-5
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  assert main_lib.main(args) == 2
  assert 'first difference: optim.pretrained_learning_rate' in capsys.readouterr().err


def test_start_up_header_and_compile_messages(tmp_path, caplog, tiny_overrides):
  import logging
  caplog.set_level(logging.INFO, logger='affectjax')
  assert main_lib.main(['train', '--config', config_path('synthetic.py:tfn'), '--workdir',
                        str(tmp_path / 'w'), *[f'--config.{o}' for o in tiny_overrides]]) == 0
  lines = [r.getMessage() for r in caplog.records]
  head = lines[0]
  for part in ('synthetic:tfn: tensor_fusion.TFN (', 'parameters), task classification',
               '12 steps of 16', 'mesh data 8 x fsdp 1 x model 1', 'train 256, valid 40, test 72',
               f'workdir {tmp_path / "w"}'):
    assert part in head, part
  assert lines[1] == 'compiling the train and eval steps ...'
  assert lines[2].startswith('compiled in ')


def test_help_names_overrides_and_defaults_and_typos_get_a_suggestion(capsys):
  with pytest.raises(SystemExit):
    main_lib.main(['train', '--help'])
  out = capsys.readouterr().out
  assert '--config.a.b=VALUE' in out and 'folder for the run' in out
  with pytest.raises(SystemExit):
    main_lib.main(['build-clips', '--help'])
  assert 'frames sampled per clip (default: 16)' in ' '.join(capsys.readouterr().out.split())
  assert main_lib.main(['train', '--config', 'synthtic:tfn', '--workdir', 'unused']) == 2
  assert capsys.readouterr().err.strip().endswith('did you mean synthetic?')
  assert main_lib.main(['train', '--config', 'synthetic:tfn', '--workdir', 'unused',
                        '--config.train.num_step=3']) == 2
  assert capsys.readouterr().err.strip().endswith('did you mean train.num_steps?')


def test_progress_off_a_terminal_says_what_count_rate_and_time_left(capsys, monkeypatch):
  """In a log (not a terminal): the heading (what is cached where) with the first line,
  a line every `every` seconds with count, rate and time left, a closing line; work that
  ends in its first seconds prints its heading only at the end."""
  from affectjax import progress
  monkeypatch.setattr(sys.stderr, 'isatty', lambda: False)
  bar = progress.Progress(4, 'decoding 4 clips once (cached in /c)', every=0.0)
  bar.update()
  bar.update(3)
  bar.close()
  lines = capsys.readouterr().err.splitlines()
  assert lines[0] == 'affectjax: decoding 4 clips once (cached in /c)'
  assert lines[1].startswith('affectjax: 1/4 clips (') and 's left)' in lines[1]
  assert lines[2].startswith('affectjax: 4/4 clips (') and 'left' not in lines[2]
  assert lines[3].startswith('affectjax: done, 4/4 clips (') and len(lines) == 4
  quiet = progress.Progress(4, 'quick work', every=3600.0)
  quiet.update(4)
  assert capsys.readouterr().err == ''  # Nothing yet: a failure here would be one line.
  quiet.close()
  assert capsys.readouterr().err.splitlines()[0] == 'affectjax: quick work'
