r"""Early fusion, late fusion, TFN and LMF on CMU-MOSI, every modality subset, 5 seeds.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/mosi/run.py --workdir /tmp/affectjax_mosi

Stage 1 (model selection, validation only): for each model a small grid of learning
rate x one model-specific knob on text+audio+vision, 2 seeds; the cell with the
lowest mean validation MAE wins. Stage 2: the chosen setting on each modality subset
(t, a, v, ta, tv, av, tav) with seeds 0-4. Each run keeps its best validation
checkpoint; the table reports test metrics. Writes experiments/mosi/RESULTS.md.
Both stages are `affectjax sweep`s, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time

import numpy as np

from affectjax import config as config_lib
from affectjax import data as data_lib
from affectjax import hardware
from affectjax import sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {'early': 'Early fusion', 'late': 'Late fusion', 'tfn': 'TFN', 'lmf': 'LMF'}
SUBSETS = ('t', 'a', 'v', 'ta', 'tv', 'av', 'tav')
SELECTION_GRID = {
    'early': ['optim.learning_rate=5e-4,2e-3', 'model.dropout=0.1,0.3'],
    'late': ['optim.learning_rate=5e-4,2e-3', 'model.dropout=0.1,0.3'],
    'tfn': ['optim.learning_rate=5e-4,2e-3', 'model.post_fusion_dropout=0.2,0.5'],
    'lmf': ['optim.learning_rate=5e-4,2e-3', 'model.rank=4,8'],
}
METRICS = ('acc2', 'f1', 'mae', 'corr')




def _split_sizes(spec: str) -> dict[str, int]:
  """Examples per split of configs/<spec> (utterances, or videos with `contextual`)."""
  dataset = data_lib.get_dataset(config_lib.load(os.path.join(REPO, 'configs', spec)))
  return {k: len(v) for k, v in dataset.splits.items()}


RIDGE_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def text_ridge(spec: str = 'mosi.py:tfn') -> dict:
  """The text-only reference row: a ridge regression on the training utterances' text
  features (standardised with the training statistics), its penalty chosen on validation
  MAE; the test metrics of the chosen one, and the penalty."""
  from affectjax import metrics
  splits = data_lib.get_dataset(config_lib.load(os.path.join(REPO, 'configs', spec))).splits
  xy = {k: (np.asarray(v.arrays['text'], np.float64).reshape(len(v), -1),
            np.asarray(v.arrays['label'], np.float64)) for k, v in splits.items()}
  mean, std = xy['train'][0].mean(0), xy['train'][0].std(0) + 1e-8
  x = {k: np.c_[(a - mean) / std, np.ones(len(a))] for k, (a, _) in xy.items()}
  best = None
  for alpha in RIDGE_GRID:
    reg = alpha * np.eye(x['train'].shape[1])
    reg[-1, -1] = 0.0  # The intercept is not penalised.
    w = np.linalg.solve(x['train'].T @ x['train'] + reg, x['train'].T @ xy['train'][1])
    mae = float(np.abs(x['valid'] @ w - xy['valid'][1]).mean())
    if best is None or mae < best[0]:
      best = (mae, alpha, w)
  return {'alpha': best[1], **metrics.sentiment_metrics(xy['test'][1], x['test'] @ best[2])}


def select(model: str, workdir: str, seeds: int) -> tuple[list[str], dict]:
  """Stage 1: returns the winning overrides and the validation MAE of every cell."""
  spec = os.path.join(REPO, 'configs', f'mosi.py:{model}')
  out = sweep.run(spec, SELECTION_GRID[model], seeds, os.path.join(workdir, 'select', model))
  return sweep.best_cell(out['rows'], SELECTION_GRID[model], 'mae', 'min')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', default='/tmp/affectjax_mosi')
  p.add_argument('--seeds', type=int, default=5)
  p.add_argument('--selection-seeds', type=int, default=2)
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--results', default=os.path.join(REPO, 'experiments', 'mosi', 'RESULTS.md'))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('affectjax').setLevel(logging.INFO)
  start = time.time()
  models = args.models.split(',')
  chosen, selection, finals = {}, {}, {}
  for model in models:
    chosen[model], selection[model] = select(model, args.workdir, args.selection_seeds)
    spec = os.path.join(REPO, 'configs', f'mosi.py:{model}')
    finals[model] = sweep.run(spec, ['data.modalities=' + ','.join(SUBSETS)], args.seeds,
                              os.path.join(args.workdir, 'final', model), chosen[model])
  wall = time.time() - start
  videos = _split_sizes(f'mosi.py:{models[0]},contextual')  # One example per video.
  utterances = _split_sizes(f'mosi.py:{models[0]}')
  ridge = text_ridge(f'mosi.py:{models[0]}')
  valid_acc2 = np.mean([r['valid_acc2'] for m in models for r in finals[m]['rows']])

  lines = ['| model | modalities | Acc-2 (non-0) | F1 (non-0) | MAE | Corr |',
           '|---|---|---|---|---|---|']
  for model in models:
    rows = finals[model]['rows']
    aggs = {m: sweep.aggregate(rows, m) for m in METRICS}
    for subset in SUBSETS:
      cell = sweep.cell_name([('data.modalities', subset)])
      mean = {m: aggs[m][cell][0] for m in METRICS}
      std = {m: aggs[m][cell][1] for m in METRICS}
      lines.append(
          f'| {MODELS[model]} | {subset} | {100 * mean["acc2"]:.1f} +- {100 * std["acc2"]:.1f} '
          f'| {100 * mean["f1"]:.1f} +- {100 * std["f1"]:.1f} '
          f'| {mean["mae"]:.3f} +- {std["mae"]:.3f} | {mean["corr"]:.3f} +- {std["corr"]:.3f} |')
  sel_lines = []
  for model in models:
    cells = ', '.join(f'{c}: {v:.3f}' for c, v in selection[model].items())
    sel_lines.append(f'- {MODELS[model]}: chose `{" ".join(chosen[model])}` '
                     f'(mean validation MAE per cell: {cells})')
  argv_str = ' '.join(argv if argv is not None else sys.argv[1:])
  text = f"""# CMU-MOSI: tensor-fusion family, every modality subset

Generated by `experiments/mosi/run.py` on {datetime.date.today().isoformat()}; do not edit by hand.

Command: `AFFECTJAX_DATA_DIR=../shared/data python experiments/mosi/run.py {argv_str}`

Hardware: {hardware.describe()}. Wall time: {wall / 60:.1f} min for this invocation (finished runs are
read back, so a re-run that trains nothing takes seconds).

Data: the utterance features and split of Poria et al. 2017 (`mosi/mosi_utterances.npz`):
{videos['train'] + videos['valid']} training videos, of which {videos['valid']} form the validation set (fixed seed), and
{videos['test']} test videos ({utterances['test']} utterances). Sentiment regression with an L1 loss; each run keeps the checkpoint with
the lowest validation MAE. Test metrics, mean +- std over seeds 0..{args.seeds - 1}.
Acc-2 and F1 are the "non-0" variants (utterances labelled exactly 0 are left out; F1 is
weighted over negative/positive).

Caution on validation: the feature extractors of this release were trained on all
{videos['train'] + videos['valid']} training videos, so validation utterances are ones the extractors have seen and
validation scores are inflated (validation Acc-2 {100 * valid_acc2:.1f} on average over these runs). Model selection still uses validation only; the test
videos are untouched until the final evaluation.

{chr(10).join(lines)}

Reference points on these features (test split above, binary accuracy): text-only ridge
regression {100 * ridge['acc2']:.1f} (computed here: penalty {ridge['alpha']:g} chosen on validation MAE); published,
contextual bc-LSTM 80.3 (Poria et al. 2017) and MMMU-BA 82.31 (Ghosal et al. 2018). Those contextual models see the whole video; the models here classify each utterance
alone.

Model selection (stage 1, validation only, text+audio+vision, {args.selection_seeds} seeds):
{chr(10).join(sel_lines)}
"""
  with open(args.results, 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
