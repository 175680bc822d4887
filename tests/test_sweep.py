import csv
import json

import numpy as np
import pytest

from affectjax import main as main_lib
from affectjax import sweep
from conftest import config_path


def test_parse_grid_and_cell_names():
  assert sweep.parse_grid(['model.rank=2,4', "mesh.rules=(('a', None),);()"]) == [
      ('model.rank', ['2', '4']), ('mesh.rules', ["(('a', None),)", '()'])]
  assert sweep.cell_name([('model.rank', '2'), ('data.modalities', 'ta')]) == (
      'model.rank=2,data.modalities=ta')
  with pytest.raises(ValueError, match='expected KEY=V1,V2'):
    sweep.parse_grid(['model.rank'])
  # Each would silently run fewer configs than asked for, or count one run twice.
  for items, match in ((['model.rank=2,4,2'], "value '2' listed twice"),
                       (['model.rank=2,,4'], 'an empty value'),
                       (['seed=0,1'], 'seeds come from --seeds'),
                       (['model.rank=2', 'model.rank=4'], 'model.rank is already a grid axis')):
    with pytest.raises(ValueError, match=match):
      sweep.parse_grid(items)


def test_aggregate_mean_and_sample_std():
  rows = [{'cell': 'a', 'test_acc2': x} for x in (0.7, 0.8, 0.9)] + [
      {'cell': 'b', 'test_acc2': 0.5}]
  agg = sweep.aggregate(rows, 'acc2')
  assert agg['a'][0] == pytest.approx(0.8) and agg['a'][1] == pytest.approx(0.1)
  assert agg['b'] == (0.5, 0.0, 1)


def test_sweep_cli_runs_cells_once_and_aggregates(tmp_path, capsys, tiny_overrides):
  args = ['sweep', '--config', config_path('synthetic.py:lmf'), '--grid', 'model.rank=2,3',
          '--grid', 'data.modalities=ta,tav', '--seeds', '2', '--workdir', str(tmp_path),
          '--config.name=run{seed}', *[f'--config.{o}' for o in tiny_overrides]]
  assert main_lib.main(args) == 0
  with open(tmp_path / 'sweep.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 8 and {r['data.modalities'] for r in rows} == {'ta', 'tav'}
  run_dir = tmp_path / 'model.rank=3,data.modalities=ta' / 'seed1'
  config = json.loads((run_dir / 'config.json').read_text())
  assert config['model']['rank'] == 3 and config['data']['modalities'] == ['text', 'audio']
  assert config['seed'] == 1 and config['name'] == 'run1'  # `{seed}` filled in per run.
  table = (tmp_path / 'sweep.md').read_text()
  assert '| 3 | tav |' in table and '+-' in table
  # The recorded command reproduces the sweep: the overrides and the workdir included.
  assert "'--config.name=run{seed}'" in table and f'--workdir {tmp_path}' in table
  assert (tmp_path / 'sweep.png').read_bytes()[:4] == b'\x89PNG'
  # A second invocation reads the finished runs back instead of training again.
  mtime = (run_dir / 'results.json').stat().st_mtime_ns
  assert main_lib.main(args) == 0
  assert (run_dir / 'results.json').stat().st_mtime_ns == mtime


def test_sweep_rejects_bad_cell_before_training(tmp_path, capsys):
  code = main_lib.main(['sweep', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--grid', 'model.rank=2', '--seeds', '1', '--workdir', str(tmp_path)])
  assert code == 2 and 'unknown config key: model.rank' in capsys.readouterr().err
  assert not any(tmp_path.iterdir())


def test_sweep_refuses_two_cells_in_one_folder_before_training(tmp_path, capsys):
  # 'a b' and 'a_b' are both written as the folder 'a_b'.
  code = main_lib.main(['sweep', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--grid', 'name=a b;a_b', '--seeds', '1', '--workdir', str(tmp_path)])
  err = capsys.readouterr().err
  assert code == 2 and "both map to the folder 'name=a_b'" in err, err
  assert not any(tmp_path.iterdir())


def test_robustness_cli(tmp_path, capsys, tiny_overrides):
  common = ['--config', config_path('synthetic.py:tfn,redundant'), '--workdir', str(tmp_path),
            *[f'--config.{o}' for o in tiny_overrides]]
  assert main_lib.main(['robustness', *common]) == 2
  assert 'no finished run here' in capsys.readouterr().err
  assert main_lib.main(['train', *common]) == 0
  assert main_lib.main(['robustness', *common, '--levels', '1']) == 0
  report = json.loads((tmp_path / 'robustness.json').read_text())
  assert set(report['conditions']) == {
      'clean', *(f'{m} {c}' for m in ('text', 'audio', 'vision') for c in (
          'absent', 'noise 1x feature std', 'feature drop 0.25', 'feature drop 0.5',
          'feature drop 0.75'))}  # Vectors: no time-step drops.
  assert (tmp_path / 'robustness.png').stat().st_size > 0
  results = json.loads((tmp_path / 'results.json').read_text())
  assert report['conditions']['clean']['accuracy'] == pytest.approx(
      results['test']['accuracy'])
  assert all(report['drop']['clean'][m] == 0 for m in report['drop']['clean'])
  # Without --config, the run's own config from the workdir: the same report.
  assert main_lib.main(['robustness', '--workdir', str(tmp_path), '--levels', '1']) == 0
  again = json.loads((tmp_path / 'robustness.json').read_text())
  assert again['conditions'] == report['conditions']
  assert main_lib.main(['robustness', '--workdir', str(tmp_path), '--levels', 'nan']) == 2
  assert '--levels nan: expected finite numbers > 0' in capsys.readouterr().err


def test_robustness_noise_is_per_feature_drops_are_signed_and_sequences_drop_steps():
  from affectjax import robustness
  rng = np.random.default_rng(0)
  # Two features on very different scales: noise follows each one's own spread.
  train = {'x': np.stack([rng.normal(0, 100, 4000), rng.normal(0, 0.1, 4000)], 1)}
  std = robustness.feature_std(train, 'x')
  np.testing.assert_allclose(std, [100, 0.1], rtol=0.05)
  clean = {'x': np.zeros((4000, 2))}
  noisy = robustness.corrupt(clean, 'x', 'noise', 0.5, std, rng)['x']
  np.testing.assert_allclose(noisy.std(0), [50, 0.05], rtol=0.05)
  # Positive drop is worse for both kinds of metric.
  assert robustness.worse('accuracy', 0.8, 0.7) > 0 and robustness.worse('mae', 0.8, 0.9) > 0
  assert robustness.worse('mae', 0.8, 0.7) < 0
  # Sequences: padding stays zero, a structured drop zeroes one block of steps.
  seq = {'x': np.ones((3, 8, 2)), 'label_mask': np.array([[1] * 8, [1] * 8, [1] * 4 + [0] * 4],
                                                          np.float32)}
  out = robustness.corrupt(seq, 'x', 'structured drop', 0.5, np.ones(2), rng)['x']
  dropped = (out[:2, :, 0] == 0)
  assert (dropped.sum(1) == 4).all()
  for row in dropped:  # One contiguous block.
    idx = np.flatnonzero(row)
    assert idx[-1] - idx[0] == 3
  assert not out[2, 4:].any()
  steps = robustness.corrupt(seq, 'x', 'time drop', 0.5, np.ones(2), rng)['x']
  assert ((steps == 0).all(-1) | (steps == 1).all(-1)).all()  # Whole steps dropped.
  with pytest.raises(ValueError, match='has no time axis'):
    robustness.corrupt(train, 'x', 'time drop', 0.5, std, rng)


def test_sweep_figure_tells_the_truth():
  """Bars from zero, a panel per value of the second grid axis, n per bar, std only with
  more than one seed, and a chance line; the table shows no '+- 0.0' for one seed."""
  rows = [{'cell': f'r={r},m={m}', 'r': r, 'm': m, 'seed': s,
           'test_accuracy': 0.6 + 0.05 * r + 0.01 * s}
          for r in (2, 4) for m in ('ta', 'tav') for s in (0, 1)]
  fig = sweep.figure(rows, ['r', 'm'], 'accuracy', sweep.chance_level('accuracy', 4))
  panels = [ax for ax in fig.axes if ax.patches]
  assert [ax.get_title() for ax in panels] == ['m=ta', 'm=tav']
  assert all(ax.get_ylim()[0] == 0 for ax in panels)
  assert [t.get_text() for t in panels[0].get_xticklabels()] == ['2', '4']
  assert any(line.get_ydata()[0] == pytest.approx(25.0) for line in panels[0].lines)
  assert 'over 2 seeds' in fig.texts[0].get_text()
  assert [t.get_text() for t in panels[0].texts] == ['n=2', 'n=2']
  one = [r for r in rows if r['seed'] == 0]
  assert 'one seed each' in sweep.figure(one, ['r', 'm'], 'accuracy').texts[0].get_text()
  table = sweep.markdown_table(one, ['r', 'm'], ['accuracy'], 1)
  assert '+-' not in table and '| 2 | ta | 70.0 | 1 |' in table
  assert sweep.chance_level('uar', 8) == 0.125 and sweep.chance_level('mae', None) is None
