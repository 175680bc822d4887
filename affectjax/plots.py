"""Figures written next to results: confusion matrices, training curves, reconstructions."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def new_figure(figsize):
  """A figure drawn by the Agg canvas directly: no pyplot, so writing files never switches
  the global backend (a notebook's inline plots keep working after a training run)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize)
  FigureCanvasAgg(fig)
  return fig


def confusion_matrix_png(confusion, class_names: Sequence[str] | None, path: str,
                         title: str = '') -> str:
  """Row-normalised confusion matrix (rows: true class) with counts, written atomically."""
  cm = np.asarray(confusion, np.int64)
  names = list(class_names) if class_names else [str(i) for i in range(len(cm))]
  rows = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
  size = 1.2 + 0.7 * len(names)
  fig = new_figure((size + 1.5, size))
  ax = fig.subplots()
  im = ax.imshow(frac, cmap='Blues', vmin=0, vmax=1)
  for i in range(len(cm)):
    for j in range(len(cm)):
      ax.text(j, i, f'{cm[i, j]}\n{frac[i, j]:.0%}', ha='center', va='center', fontsize=8,
              color='white' if frac[i, j] > 0.5 else 'black')
  ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title)
  fig.colorbar(im, ax=ax, fraction=0.046, label='fraction of true class')
  fig.tight_layout()
  from affectjax import workdir
  workdir.write_atomic(path, 'the confusion-matrix figure',
                       lambda f: fig.savefig(f, format='png', dpi=110), mode='wb')
  return path


def training_curves_png(metrics_path: str, select_metric: str, best_step, path: str,
                        title: str = '') -> str | None:
  """The run's curves from its metrics.jsonl: training loss (mean since the previous
  evaluation) and validation loss per evaluated step on the left, the validation
  selection metric on the right with the selected (best) step marked; written atomically.
  None when the file holds no evaluation."""
  import json
  records = []
  with open(metrics_path) as f:
    for line in f:
      if line.strip():
        records.append(json.loads(line))
  records = [r for r in records if isinstance(r.get('valid'), dict)]
  if not records:
    return None
  steps = [r['step'] for r in records]
  fig = new_figure((9, 3.4))
  left, right = fig.subplots(1, 2)
  train_loss = [r.get('train_loss', np.nan) for r in records]
  left.plot(steps, train_loss, 'o-', ms=3, label='train (mean since last evaluation)')
  if all('loss' in r['valid'] for r in records):
    left.plot(steps, [r['valid']['loss'] for r in records], 's-', ms=3, label='valid')
  left.set_xlabel('step')
  left.set_ylabel('loss')
  left.legend(fontsize=8)
  values = [r['valid'].get(select_metric, np.nan) for r in records]
  right.plot(steps, values, 'o-', ms=3, color='C2')
  if best_step in steps:  # The checkpoint the run's results come from.
    right.axvline(best_step, color='grey', ls=':', lw=1)
    late = steps.index(best_step) > len(steps) / 2  # Label on the side with room.
    right.annotate(f'selected: step {best_step}', (best_step, values[steps.index(best_step)]),
                   fontsize=8, textcoords='offset points', xytext=(-4 if late else 4, -12),
                   ha='right' if late else 'left')
  right.set_xlabel('step')
  right.set_ylabel(f'valid {select_metric}')
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  from affectjax import workdir
  workdir.write_atomic(path, 'the training-curves figure',
                       lambda f: fig.savefig(f, format='png', dpi=110), mode='wb')
  return path


def reconstruction_png(x, masked, prediction, patch, frame_mask, path: str, title: str,
                       norm_targets: bool = False, row_names: Sequence[str] = ()) -> str:
  """Per row (one clip): the log-mel input, the masked input (hidden patches blank) and the
  reconstruction (visible patches as given, hidden ones predicted and put back in log-mel
  units), written atomically. `x` (B, T, F) cropped to whole patches; `masked`,
  `prediction`: the model's (B, N) mask and (B, N, P) patch predictions; with
  `norm_targets` the predictions are per-patch normalised and are mapped back with each
  patch's own mean and deviation."""
  from affectjax import workdir
  from affectjax.layers import patches as patches_lib
  x = np.asarray(x, np.float32)
  patch = tuple(patch)
  grid = np.asarray(patches_lib.patchify(x, patch))  # (B, N, P)
  pred, masked = np.asarray(prediction, np.float32), np.asarray(masked) > 0
  if norm_targets:  # The inverse of the model's per-patch normalisation of its targets.
    mu, sd = grid.mean(-1, keepdims=True), grid.std(-1, keepdims=True)
    pred = pred * np.sqrt(sd ** 2 + 1e-6) + mu
  shape = x.shape[1:]

  def image(g):
    return np.asarray(patches_lib.unpatchify(g, patch, shape))
  hidden = image(np.where(masked[..., None], np.nan, grid))
  recon = image(np.where(masked[..., None], pred, grid))
  real = np.asarray(frame_mask)[:, :x.shape[1]] > 0
  fig = new_figure((12, 2.2 * len(x)))
  axes = fig.subplots(len(x), 3, squeeze=False)
  for r in range(len(x)):
    n = max(int(real[r].sum()), 1)
    vmin, vmax = np.percentile(x[r, :n], (1, 99))
    for j, (img, name) in enumerate(((x[r], 'log-mel'), (hidden[r], 'masked input (hidden: '
                                                                      'blank)'),
                                     (recon[r], 'reconstruction (hidden patches predicted)'))):
      ax = axes[r, j]
      ax.imshow(img[:n].T, origin='lower', aspect='auto', vmin=vmin, vmax=vmax, cmap='magma',
                interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
    if r < len(row_names):
      axes[r, 0].set_ylabel(row_names[r], fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  workdir.write_atomic(path, 'the reconstruction figure',
                       lambda f: fig.savefig(f, format='png', dpi=80), mode='wb')
  return path
