r"""How much a validation split carved from MOSI's training videos can tell, per feature set.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/mosi/validation_probe.py

The Poria et al. 2017 text and video features come from extractors that were trained on
the 62 training videos, so on the validation videos carved from them (the split of
affectjax.data.mosi) they are nearly as easy as on training data, and selecting a model
there says little about test. Here each feature set gets a ridge regression on the
remaining training videos, scored on those validation videos (Acc-2 non-0, %), for every
ridge strength in LAMBDAS (nothing is chosen). Frozen all-MiniLM-L6-v2 embeddings of the
same transcripts are the contrast: that encoder never saw MOSI. The test split is not read.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from affectjax.data import mosi
from affectjax.encoders import bert

LAMBDAS = (1.0, 10.0, 100.0, 1000.0)


def ridge_acc2(x_train, y_train, x_valid, y_valid, lam):
  """Acc-2 non-0 of a ridge regression on standardised features (bias unpenalised)."""
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  design = lambda x: np.c_[(x - mean) / std, np.ones(len(x))]
  a = design(x_train)
  penalty = lam * np.eye(a.shape[1])
  penalty[-1, -1] = 0
  w = np.linalg.solve(a.T @ a + penalty, a.T @ y_train)
  keep = y_valid != 0
  return float(np.mean((design(x_valid[keep]) @ w > 0) == (y_valid[keep] > 0)))


def main() -> int:
  data_dir = os.environ.get('AFFECTJAX_DATA_DIR')
  if not data_dir:
    sys.exit('set AFFECTJAX_DATA_DIR (the folder holding mosi/mosi_utterances.npz)')
  path = os.path.join(data_dir, 'mosi', 'mosi_utterances.npz')
  splits = mosi.read_poria_npz(path)
  with np.load(path, allow_pickle=False) as f:
    transcript = dict(zip(f['id'], f['text']))
  train, valid = splits['train'], splits['valid']
  features = {name: (train[key], valid[key]) for name, key in (
      ('Poria text-CNN', 'text'), ('Poria openSMILE audio', 'audio'),
      ('Poria 3D-CNN video', 'vision'))}
  features['frozen MiniLM (transcripts)'] = tuple(
      bert.embed_texts([str(transcript[i]) for i in split['id']]) for split in (train, valid))
  print(f'{len(set(train["video_id"]))} training / {len(set(valid["video_id"]))} validation '
        'videos; validation Acc-2 non-0 (%) of a ridge regression, per ridge strength\n')
  print('| features | ' + ' | '.join(f'lambda {lam:g}' for lam in LAMBDAS) + ' |')
  print('|---|' + '---|' * len(LAMBDAS))
  for name, (x_train, x_valid) in features.items():
    accs = [ridge_acc2(x_train, train['label'], x_valid, valid['label'], lam)
            for lam in LAMBDAS]
    print(f'| {name} | ' + ' | '.join(f'{100 * a:.1f}' for a in accs) + ' |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
