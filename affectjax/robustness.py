"""Missing- and corrupted-modality robustness of a trained run (MultiBench-style).

For each modality of a finished run, the test split is evaluated with that modality:
- absent (its features set to zero, the usual imputation when a sensor fails);
- with Gaussian noise of `level` x each feature's training standard deviation (per
  feature: one global std would be dominated by the largest-scale features; MOSI audio's
  global std is 23.4 against a per-feature median of 0.13);
- with a random fraction `level` of its features zeroed per example (`feature drop`);
- for sequences (B, T, D), with a random fraction `level` of its time steps zeroed
  (`time drop`) and with one contiguous block of that fraction zeroed (`structured drop`),
  as in MultiBench's robustness tests (Liang et al. 2021).
Noise levels are `levels`; drop fractions are `fractions`. The drop column is signed so
that positive always means worse (clean - corrupted for accuracy-like metrics,
corrupted - clean for errors). Written to WORKDIR/robustness.{json,md,png}.
"""

from __future__ import annotations

import json
import os

import numpy as np

from affectjax import errors
from affectjax import sweep
from affectjax import experiment as experiment_lib
from affectjax import workdir as workdir_lib
from affectjax.data.base import ArraySource

LOWER_IS_BETTER = ('mae', 'mse', 'loss')
KINDS = ('noise', 'feature drop', 'time drop', 'structured drop')


def worse(metric: str, clean: float, corrupted: float) -> float:
  """How much worse `corrupted` is than `clean`: positive is worse, for every metric."""
  return corrupted - clean if metric in LOWER_IS_BETTER else clean - corrupted


def _real(arrays, x) -> np.ndarray:
  """(B, T) 1 at real time steps of a sequence field (padding 0), from `label_mask`, a
  `frame_mask`, or nonzero rows."""
  for key in ('label_mask', 'frame_mask'):
    if key in arrays and arrays[key].shape == x.shape[:2]:
      return arrays[key] > 0
  return np.abs(x).reshape(*x.shape[:2], -1).sum(-1) > 0


def feature_std(arrays, modality: str) -> np.ndarray:
  """Per-feature (last axis) standard deviation over the training examples (and the real
  time steps of sequences)."""
  x = np.asarray(arrays[modality], np.float64)
  if x.ndim >= 3:
    x = x[_real(arrays, x)]
  x = x.reshape(-1, x.shape[-1])
  return np.maximum(x.std(axis=0), 1e-12)


def corrupt(arrays, modality: str, kind: str, level, std, rng):
  """A copy of `arrays` with `modality` corrupted (`kind`: absent, or one of KINDS)."""
  out = dict(arrays)
  x = np.asarray(arrays[modality])
  if kind == 'absent':
    y = np.zeros_like(x)
  elif kind == 'noise':
    y = x + level * std * rng.normal(size=x.shape)
  elif kind == 'feature drop':
    keep = rng.random((x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])) >= level
    y = x * keep
  elif kind in ('time drop', 'structured drop'):
    if x.ndim < 3:
      raise ValueError(f'{kind}: {modality!r} has no time axis')
    b, t = x.shape[:2]
    if kind == 'time drop':
      keep = rng.random((b, t)) >= level
    else:
      width = int(round(level * t))
      start = rng.integers(0, t - width + 1, size=b)
      steps = np.arange(t)[None]
      keep = ~((steps >= start[:, None]) & (steps < start[:, None] + width))
    y = x * keep.reshape(b, t, *([1] * (x.ndim - 2)))
  else:
    raise ValueError(f'robustness: unknown corruption {kind!r}')
  y = y.astype(x.dtype)
  if 'label_mask' in arrays:  # Keep padding slots at zero.
    mask = arrays['label_mask'].reshape(arrays['label_mask'].shape + (1,) * (x.ndim - 2))
    y = y * mask
  out[modality] = y
  return out


def evaluate_robustness(config, workdir: str, levels=(0.5, 1.0, 2.0),
                        fractions=(0.25, 0.5, 0.75), seed: int = 0) -> dict:
  exp, eval_step, params, dataset = experiment_lib.load_trained(config, workdir)
  if not hasattr(exp.task, 'label_metrics'):
    raise errors.ConfigError(f'robustness: {workdir} is a {config.task.name} run; the '
                             'curves score a classifier or regressor')
  stored = getattr(dataset.splits['test'], 'arrays', None)
  missing = sorted(set(exp.element_spec) - set(stored or ()))
  if missing:
    raise errors.ConfigError(
        f'robustness: {config.get("name", "this config")} computes its model inputs in the '
        f'input pipeline ({", ".join(missing)} are not stored arrays); the curves corrupt '
        'stored feature arrays (MOSI, IEMOCAP or MELD features, synthetic data)')
  bs = config.train.eval_batch_size
  test = dataset.splits['test'].arrays
  train_arrays = dataset.splits['train'].arrays
  metrics = exp.task.headline()

  def run(arrays):
    r = experiment_lib.evaluate(exp, eval_step, params, ArraySource(arrays), bs)
    return {m: r[m] for m in metrics}

  rng = np.random.default_rng(seed)
  conditions = {'clean': run(test)}
  curves = {}  # kind -> modality -> [(level, metrics)]
  for m in dataset.modalities:
    std = feature_std(train_arrays, m)
    conditions[f'{m} absent'] = run(corrupt(test, m, 'absent', None, std, rng))
    for kind in KINDS:
      if kind in ('time drop', 'structured drop') and np.asarray(test[m]).ndim < 3:
        continue
      for level in (levels if kind == 'noise' else fractions):
        name = (f'{m} noise {level:g}x feature std' if kind == 'noise' else
                f'{m} {kind} {level:g}')
        conditions[name] = run(corrupt(test, m, kind, level, std, rng))
        curves.setdefault(kind, {}).setdefault(m, []).append((level, conditions[name]))
  clean = conditions['clean']
  report = {'config': config.name, 'workdir': workdir, 'levels': list(levels),
            'fractions': list(fractions), 'seed': seed, 'conditions': conditions,
            'drop': {c: {m: worse(m, clean[m], r[m]) for m in metrics}
                     for c, r in conditions.items()}}
  workdir_lib.write_atomic(os.path.join(workdir, 'robustness.json'), 'the robustness report',
                           lambda f: json.dump(report, f, indent=2))
  table = markdown(report, metrics)
  text = (f'Test metrics of {config.name} under missing or corrupted modalities (seed '
          f'{seed}); drop: positive is worse (clean - corrupted for accuracy-like metrics, '
          f'corrupted - clean for errors). Noise is scaled per feature by its training '
          f'std.\n\n{table}\n')
  workdir_lib.write_atomic(os.path.join(workdir, 'robustness.md'), 'the robustness table',
                           lambda f: f.write(text))
  absent = {m: conditions[f'{m} absent'] for m in dataset.modalities}
  plot(curves, clean, metrics[0], os.path.join(workdir, 'robustness.png'),
       f'{config.name}: test {metrics[0]} under corruption', absent,
       sweep.chance_level(metrics[0], config.task.get('num_classes', None)))
  report['table'] = table
  return report


def plot(curves, clean: dict, metric: str, path: str, title: str, absent=None,
         chance: float | None = None) -> None:
  """A first panel with each modality absent (bars), then one panel per corruption kind:
  the metric against the level, one line per modality (each its own marker and dash, so
  overlapping lines stay visible); the clean value dashed grey and chance dotted red in
  every panel; the y axis starts at zero for accuracy-like metrics."""
  from affectjax import plots
  kinds = [k for k in KINDS if k in curves]
  if not kinds and not absent:
    return
  panels = (['absent'] if absent else []) + kinds
  fig = plots.new_figure((4.2 * len(panels), 3.6))
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  scale = sweep.percent_scale(metric)
  styles = [('o', '-'), ('s', '--'), ('^', '-.'), ('D', ':'), ('v', '-')]
  names = list(absent or {}) or sorted({m for k in kinds for m in curves[k]})
  for ax, panel in zip(axes, panels):
    if panel == 'absent':
      ax.bar(range(len(names)), [absent[m][metric] * scale for m in names],
             color=[f'C{i}' for i in range(len(names))])
      ax.set_xticks(range(len(names)), [f'no {m}' for m in names])
      ax.set_title('modality absent (zeros)')
    else:
      for m, points in curves[panel].items():
        i = names.index(m) if m in names else 0
        marker, dash = styles[i % len(styles)]
        ax.plot([p[0] for p in points], [p[1][metric] * scale for p in points],
                marker=marker, linestyle=dash, color=f'C{i}', alpha=0.85, label=m)
      ax.set_xlabel('noise std (x feature std)' if panel == 'noise' else 'fraction dropped')
      ax.set_title(panel)
    ax.axhline(clean[metric] * scale, color='gray', linestyle='--', label='clean')
    if chance is not None:
      ax.axhline(chance * scale, color='tab:red', linestyle=':', label='chance')
    ax.set_ylabel(f'{metric}{" (%)" if scale == 100 else ""}')
    if metric not in LOWER_IS_BETTER and scale == 100:
      ax.set_ylim(0, max(100, ax.get_ylim()[1]))
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  workdir_lib.write_atomic(path, 'the robustness figure',
                           lambda f: fig.savefig(f, format='png', dpi=100), mode='wb')


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
