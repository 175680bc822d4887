"""Figures written next to results: confusion matrices."""

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
