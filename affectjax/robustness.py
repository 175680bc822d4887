"""Missing- and noisy-modality robustness of a trained run (MultiBench-style).

For each modality of a finished run, the test split is evaluated with that
modality absent (its features set to zero, the usual imputation when a sensor
fails) and with Gaussian noise of `level` x the modality's training standard
deviation added. The table reports each condition's metrics and the drop from
clean test data. Written to WORKDIR/robustness.{json,md}.
"""

from __future__ import annotations

import json
import os

import numpy as np

from affectjax import sweep
from affectjax import train as train_lib
from affectjax.data.base import ArraySource


def _corrupt(arrays, modality, level, train_std, rng):
  out = dict(arrays)
  x = arrays[modality]
  if level is None:
    out[modality] = np.zeros_like(x)
  else:
    out[modality] = (x + level * train_std * rng.normal(size=x.shape)).astype(x.dtype)
  if 'label_mask' in arrays:  # Keep padding slots at zero.
    mask = arrays['label_mask'].reshape(arrays['label_mask'].shape + (1,) * (x.ndim - 2))
    out[modality] = out[modality] * mask
  return out


def evaluate_robustness(config, workdir: str, levels=(0.5, 1.0, 2.0), seed: int = 0) -> dict:
  exp, eval_step, params, dataset = train_lib.load_trained(config, workdir)
  bs = config.train.eval_batch_size
  test = dataset.splits['test'].arrays
  train_arrays = dataset.splits['train'].arrays
  metrics = exp.task.headline()

  def run(arrays):
    r = train_lib.evaluate(exp, eval_step, params, ArraySource(arrays), bs)
    return {m: r[m] for m in metrics}

  rng = np.random.default_rng(seed)
  conditions = {'clean': run(test)}
  for m in dataset.modalities:
    std = float(train_arrays[m].std())
    conditions[f'{m} absent'] = run(_corrupt(test, m, None, std, rng))
    for level in levels:
      conditions[f'{m} noise {level:g}x std'] = run(_corrupt(test, m, level, std, rng))
  clean = conditions['clean']
  report = {'config': config.name, 'workdir': workdir, 'levels': list(levels),
            'conditions': conditions,
            # clean - corrupted: positive is worse for accuracy-like metrics.
            'drop': {c: {m: clean[m] - r[m] for m in metrics} for c, r in conditions.items()}}
  with open(os.path.join(workdir, 'robustness.json'), 'w') as f:
    json.dump(report, f, indent=2)
  table = markdown(report, metrics)
  with open(os.path.join(workdir, 'robustness.md'), 'w') as f:
    f.write(f'Test metrics of {config.name} under missing or noisy modalities '
            f'(noise seed {seed}); drop = clean - corrupted.\n\n{table}\n')
  report['table'] = table
  return report


def markdown(report: dict, metrics) -> str:
  head = '| condition | ' + ' | '.join(f'{m} (drop)' for m in metrics) + ' |'
  lines = [head, '|' + '---|' * (len(metrics) + 1)]
  for c, r in report['conditions'].items():
    cells = []
    for m in metrics:
      s = sweep.percent_scale(m)
      d = 1 if s == 100 else 3
      cells.append(f'{r[m] * s:.{d}f} ({report["drop"][c][m] * s:+.{d}f})')
    lines.append(f'| {c} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
