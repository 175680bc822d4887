"""Grids of config overrides x seeds, each cell an ordinary resumable run.

  affectjax sweep --config configs/mosi.py:tfn --grid model.post_fusion_dim=32,64 \
      --grid data.modalities=t,ta,tav --seeds 5 --workdir DIR

Runs live in DIR/<cell>/seed<k>/ (a finished run is read back, not retrained) and
are aggregated into DIR/sweep.csv (one row per run), DIR/sweep.md (mean +- std of
the test metrics per cell, model selection on validation inside each run) and
DIR/sweep.png (the selection metric per cell with std error bars).
"""

from __future__ import annotations

import csv
import json
import itertools
import logging
import os
import re
import shlex
import time

import numpy as np

from affectjax import config as config_lib
from affectjax import tasks
from affectjax import workdir as workdir_lib
from affectjax import train

log = logging.getLogger('affectjax')

def parse_grid(items) -> list[tuple[str, list[str]]]:
  """'a.b=1,2,3' -> ('a.b', ['1', '2', '3']); ';' separates values that hold commas.

  A key given twice, a value listed twice (it would count as two seeds of one cell) and
  `seed` (the seeds come from `--seeds`, which would silently replace it) are errors."""
  grid = []
  for item in items:
    key, sep, values = item.partition('=')
    if not sep or not values or not key:
      raise config_lib.ConfigError(f'--grid {item}: expected KEY=V1,V2,...')
    if key == 'seed':
      raise config_lib.ConfigError(f'--grid {item}: seeds come from --seeds N (runs seeds '
                                   '0..N-1), not from the grid')
    if key in [k for k, _ in grid]:
      raise config_lib.ConfigError(f'--grid {item}: {key} is already a grid axis')
    split = values.split(';' if ';' in values else ',')
    repeated = sorted({v for v in split if split.count(v) > 1})
    if repeated or '' in split:
      what = f'value {repeated[0]!r} listed twice' if repeated else 'an empty value'
      raise config_lib.ConfigError(f'--grid {item}: {what}')
    grid.append((key, split))
  return grid


def cell_name(assignment) -> str:
  name = ','.join(f'{k}={v}' for k, v in assignment) or 'base'
  return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', name)


def run(config_spec: str, grid_items, seeds: int, workdir: str, overrides=()) -> dict:
  """Runs (or reads back) every cell x seed; writes the CSV, table and plot.

  `{seed}` in an override becomes each run's seed, for inputs made per seed (such as
  `data.encoder=DIR/encoder_seed{seed}`)."""
  grid = parse_grid(grid_items)
  if seeds < 1:
    raise config_lib.ConfigError('--seeds must be >= 1')
  keys = [k for k, _ in grid]
  cells = [list(zip(keys, values)) for values in itertools.product(*[v for _, v in grid])]
  folders = {}
  for cell in cells:  # Two cells in one folder would share (and count) one run.
    other = folders.setdefault(cell_name(cell), cell)
    if other is not cell:
      raise config_lib.ConfigError(
          f'--grid: cells {dict(other)} and {dict(cell)} both map to the folder '
          f'{cell_name(cell)!r}; give values that differ in letters, digits or _.,=+-')
  # Resolve every config first: a typo in the last cell fails before hours of training.
  configs = {}
  for cell in cells:
    for seed in range(seeds):
      configs[(cell_name(cell), seed)] = config_lib.load(
          config_spec, [*[o.replace('{seed}', str(seed)) for o in overrides],
                        *[f'{k}={v}' for k, v in cell], f'seed={seed}'])
  rows, metric_names = [], None
  start = time.time()
  for cell in cells:
    name = cell_name(cell)
    for seed in range(seeds):
      config = configs[(name, seed)]
      results = train.train_and_evaluate(config, os.path.join(workdir, name, f'seed{seed}'))
      metric_names = tasks.get_task(config).headline()
      row = {'cell': name, **dict(cell), 'seed': seed}
      row.update({f'valid_{m}': results['valid'][m] for m in metric_names})
      row.update({f'test_{m}': results['test'][m] for m in metric_names})
      rows.append(row)
      log.info('sweep %s seed %d: test %s', name, seed,
               {m: round(results['test'][m], 4) for m in metric_names})
  select = configs[(cell_name(cells[0]), 0)].train.select_metric
  os.makedirs(workdir, exist_ok=True)
  _write_csv(os.path.join(workdir, 'sweep.csv'), rows)
  table = markdown_table(rows, keys, metric_names, seeds)
  command = shlex.join(['affectjax', 'sweep', '--config', config_spec,
                        *[a for g in grid_items for a in ('--grid', g)], '--seeds',
                        str(seeds), '--workdir', workdir,
                        *[f'--config.{o}' for o in overrides]])
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    spread = (f'mean +- std over seeds 0..{seeds - 1}' if seeds > 1 else
              'one seed (0), so no spread')
    f.write(f'Test metrics, {spread}; each run keeps its best '
            f'validation checkpoint ({select}).\n\nCommand: `{command}`\n\n{table}\n')
  plot_metric = select if select in metric_names else metric_names[0]
  num_classes = configs[(cell_name(cells[0]), 0)].task.get('num_classes', None)
  plot(rows, keys, plot_metric, os.path.join(workdir, 'sweep.png'),
       chance_level(plot_metric, num_classes))
  return {'rows': rows, 'table': table, 'wall_s': time.time() - start}


def _finished(run_dirs) -> list[dict]:
  out = []
  for run in run_dirs:
    with open(os.path.join(run, 'results.json')) as f:
      out.append(json.load(f))
  return out


def mean_train_seconds(run_dirs) -> float:
  """Mean seconds of the train loop over finished runs (their results.json timing)."""
  return float(np.mean([r['timing']['train_s'] for r in _finished(run_dirs)]))


def trained_on(run_dirs) -> str:
  """The devices the finished runs trained on ('1 x cpu', '1 x NVIDIA H100 80GB HBM3')."""
  return ', '.join(sorted({r.get('devices', '?') for r in _finished(run_dirs)}))


def best_cell(rows, grid_items, metric: str, mode: str) -> tuple[list[str], dict]:
  """Model selection over a sweep's rows: the overrides of the cell whose mean
  `valid_<metric>` over seeds is best (`mode` max or min), and that mean per cell."""
  valid: dict[str, list[float]] = {}
  for row in rows:
    valid.setdefault(row['cell'], []).append(row[f'valid_{metric}'])
  means = {c: float(np.mean(v)) for c, v in valid.items()}
  best = (max if mode == 'max' else min)(means, key=means.get)
  row = next(r for r in rows if r['cell'] == best)
  keys = [k for k, _ in parse_grid(grid_items)]
  return [f'{k}={row[k]}' for k in keys], means


def _write_csv(path: str, rows) -> None:
  fields = list(dict.fromkeys(k for r in rows for k in r))

  def write(f):
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
  workdir_lib.write_atomic(path, 'the sweep table', write)


def percent_scale(metric: str) -> float:
  """Accuracy-like metrics print in %, errors and correlations as they are."""
  return 1.0 if metric in ('mae', 'mse', 'corr') else 100.0


def aggregate(rows, metric: str, split: str = 'test') -> dict[str, tuple[float, float, int]]:
  """cell -> (mean, std (ddof=1; 0 for one seed), number of seeds) of `<split>_<metric>`."""
  out = {}
  for cell in dict.fromkeys(r['cell'] for r in rows):
    vals = np.array([r[f'{split}_{metric}'] for r in rows if r['cell'] == cell], np.float64)
    out[cell] = (vals.mean(), vals.std(ddof=1) if len(vals) > 1 else 0.0, len(vals))
  return out


def markdown_table(rows, keys, metric_names, seeds: int) -> str:
  """Mean +- std (ddof 1) per cell; the mean alone where a cell has one seed."""
  aggs = {m: aggregate(rows, m) for m in metric_names}
  header = '| ' + ' | '.join(keys or ['cell']) + ' | ' + ' | '.join(metric_names) + ' | n |'
  lines = [header, '|' + '---|' * ((len(keys) or 1) + len(metric_names) + 1)]
  for cell in dict.fromkeys(r['cell'] for r in rows):
    first = next(r for r in rows if r['cell'] == cell)
    label = [str(first[k]) for k in keys] or [cell]
    cells = []
    for m in metric_names:
      mean, std, n = aggs[m][cell]
      s = percent_scale(m)
      digits = 1 if s == 100 else 3
      cells.append(f'{mean * s:.{digits}f}' + (f' +- {std * s:.{digits}f}' if n > 1 else ''))
    lines.append('| ' + ' | '.join(label + cells) + f' | {aggs[metric_names[0]][cell][2]} |')
  return '\n'.join(lines)


def chance_level(metric: str, num_classes) -> float | None:
  """A uniform random guess's expected value, where the metric has one: 1/K for
  accuracy and UAR over K classes, 0.5 for binary sentiment accuracy."""
  if metric in ('accuracy', 'uar') and num_classes:
    return 1.0 / num_classes
  if metric in ('acc2', 'acc2_has0'):
    return 0.5
  return None


def plot(rows, keys, metric: str, path: str, chance: float | None = None) -> None:
  """`figure`, written to `path` (PNG) atomically."""
  fig = figure(rows, keys, metric, chance)
  workdir_lib.write_atomic(path, 'the sweep figure',
                           lambda f: fig.savefig(f, format='png', dpi=120), mode='wb')


def figure(rows, keys, metric: str, chance: float | None = None):
  """Bars from zero of the test metric per cell (mean over seeds; std error bars only with
  more than one seed), the first grid axis along x and one panel per value of the
  others; a dashed chance line where the metric has one."""
  from affectjax.plots import new_figure
  agg = aggregate(rows, metric)
  scale = percent_scale(metric)
  first = {n: next(r for r in rows if r['cell'] == n) for n in agg}
  x_key, panel_keys = (keys[0], keys[1:]) if keys else (None, [])
  panel_of = {n: ', '.join(f'{k}={first[n][k]}' for k in panel_keys) for n in agg}
  panels = list(dict.fromkeys(panel_of.values()))
  xs = list(dict.fromkeys(str(first[n][x_key]) for n in agg)) if x_key else list(agg)
  counts = sorted({v[2] for v in agg.values()})
  fig = new_figure((max(4.0, (0.6 * len(xs) + 1.5) * len(panels)), 3.6))
  axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
  top = 0.0
  for ax, panel in zip(axes, panels):
    names = [n for n in agg if panel_of[n] == panel]
    pos = [xs.index(str(first[n][x_key]) if x_key else n) for n in names]
    means = [agg[n][0] * scale for n in names]
    stds = [agg[n][1] * scale if agg[n][2] > 1 else 0.0 for n in names]
    ax.bar(pos, means, yerr=[s if s else np.nan for s in stds] if max(counts) > 1 else None,
           capsize=3, color='#4878a8')
    for p, m, sd, n in zip(pos, means, stds, names):
      ax.annotate(f'n={agg[n][2]}', (p, m + sd), xytext=(0, 2), textcoords='offset points',
                  ha='center', va='bottom', fontsize=7)
    top = max(top, max(m + s for m, s in zip(means, stds)))
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs, rotation=30 if len(xs) > 6 else 0,
                       ha='right' if len(xs) > 6 else 'center', fontsize=8)
    ax.set_xlabel(x_key or 'cell')
    if panel:
      ax.set_title(panel, fontsize=9)
    if chance is not None:
      ax.axhline(chance * scale, color='gray', linestyle='--', linewidth=1, label='chance')
      ax.legend(fontsize=7, loc='lower right')
  axes[0].set_ylabel(f'test {metric}' + (' (%)' if scale == 100 else ''))
  upper = max(top, (chance or 0) * scale) * 1.15 or 1.0
  axes[0].set_ylim(0, min(upper, 100) if scale == 100 and top <= 100 else upper)
  seeds = ('one seed each (no spread shown)' if counts == [1] else
           f'mean +- std over {counts[0]} seeds' if len(counts) == 1 else
           f'mean +- std over {counts[0]}-{counts[-1]} seeds')
  fig.suptitle(f'{seeds}; bars start at zero', fontsize=9)
  fig.tight_layout()
  return fig
