r"""How configs/ravdess_whisper.py's frozen-feature head was chosen: validation UAR only.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/speech_encoders/head_choice.py --workdir /tmp/affectjax_head_choice

Each variant (overrides of configs/ravdess_whisper.py) is trained on the six RAVDESS
folds for 800 steps through `affectjax train`'s loop, and the mean validation UAR of its
validation-selected checkpoint is printed. Test scores are not read. The variant with the
best mean became the config's default (configs/emodb_whisper.py takes the same head).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

from affectjax import config as config_lib, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = {
    'unstandardised, mean, linear': ['data.encoder_norm=none', 'model.towers.audio.pool=mean'],
    'mean, linear': ['model.towers.audio.pool=mean'],
    'mean, linear, dropout 0.5': ['model.towers.audio.pool=mean', 'model.dropout=0.5'],
    'mean+std, linear': ['model.towers.audio.pool=mean_std'],
    'attentive statistics, linear': ['model.towers.audio.pool=attention'],
    'attentive statistics, 256 GELU': ['model.towers.audio.pool=attention',
                                       'model.towers.audio.width=256'],
}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--variants', default=','.join(VARIANTS))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  for name in args.variants.split(','):
    scores = []
    for fold in range(1, 7):
      config = config_lib.load(
          os.path.join(REPO, 'configs', f'ravdess_whisper.py:fold{fold}'),
          ['model.towers.audio.width=0', 'train.num_steps=800', 'train.eval_every=50',
           *VARIANTS[name]])
      slug = name.replace(' ', '_').replace(',', '').replace('+', '_')
      results = train.train_and_evaluate(config, os.path.join(args.workdir, f'{slug}_f{fold}'))
      scores.append(results['valid']['uar'])
    print(f'{name}: validation UAR per fold {np.round(scores, 3).tolist()}, mean '
          f'{100 * np.mean(scores):.1f}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
