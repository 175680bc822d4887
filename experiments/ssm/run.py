r"""State-space models on three affect problems; writes experiments/ssm/RESULTS.md.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/ssm/run.py --workdir /tmp/affectjax_ssm

Studies (`--studies`, comma-separated):
- mosi: contextual sentiment on CMU-MOSI (videos as utterance sequences): ContextualSSM
  with S5 and with the selective scan, ContextualSSM (S5) with MMMU-BA's inter-modal
  attention as its fusion, and the bc-LSTM baseline; config defaults, seeds
  0..N-1; checkpoint chosen on validation MAE; test Acc-2 etc.
- erc: BroadMamba on IEMOCAP (frozen MiniLM text) and, with `--corpora iemocap,meld`,
  MELD; seeds 0..N-1; checkpoint chosen on validation weighted F1.
- ser: frame-level speech emotion recognition on RAVDESS, SpeechSSM (S5) versus
  SpeechTransformer of the same width and depth, one run per actor fold (`--folds`);
  each fold's best-validation checkpoint is also scored on EmoDB's clips of the six
  emotions both corpora have (logits restricted to those six classes).

No setting is tuned here: every run uses its config's defaults (plus the step counts
below), so nothing is chosen on test. Every run is an `affectjax sweep` cell, so an
interrupted study resumes where it stopped and a finished one is read back.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time

import numpy as np

from affectjax import config as config_lib
from affectjax import hardware, studies, sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOSI_MODELS = {  # name -> (config, overrides, label)
    'ssm_s5': ('mosi:ssm', ['model.ssm=s5'], 'ContextualSSM (S5)'),
    'ssm_mamba': ('mosi:ssm', ['model.ssm=mamba'], 'ContextualSSM (selective)'),
    'ssm_s5_attention': ('mosi:ssm', ['model.ssm=s5', 'model.fusion=attention'],
                         'ContextualSSM (S5, inter-modal attention fusion)'),
    'bclstm': ('mosi:bclstm', [], 'bc-LSTM'),
}
MOSI_METRICS = ('acc2', 'f1', 'acc2_has0', 'mae', 'corr')
ERC_STEPS = {'iemocap': 300, 'meld': 600}
ERC_METRICS = ('weighted_f1', 'accuracy', 'macro_f1')
SER_MODELS = {'ssm': ('ravdess_speech:ssm', 'SpeechSSM (S5)'),
              'transformer': ('ravdess_speech:transformer', 'SpeechTransformer')}
SER_STEPS = 300


def _spec(name: str, arg: str = '') -> str:
  """'mosi:ssm', 'fold2' -> configs/mosi.py:ssm,fold2."""
  file, _, picks = name.partition(':')
  variants = ','.join(x for x in (picks, arg) if x)
  return os.path.join(REPO, 'configs', f'{file}.py') + (f':{variants}' if variants else '')


def _steps(n: int) -> list[str]:
  every = max(n // 8, 10)
  return [f'train.num_steps={n}', f'train.eval_every={every}', f'train.log_every={every}']


def _cells(aggs, metrics, scale) -> str:
  def cell(m):
    digits = 2 if scale(m) == 100 else 3  # Percentages, or MAE / correlation.
    return f'{scale(m) * aggs[m][0]:.{digits}f} +- {scale(m) * aggs[m][1]:.{digits}f} |'
  return ' '.join(cell(m) for m in metrics)


def mosi_study(workdir: str, seeds: int, mamba_seeds: int) -> str:
  rows = ['| model | seeds | Acc-2 non-0 | F1 non-0 | Acc-2 has-0 | MAE | Corr | train s/run | trained on |',
          '|---|---|---|---|---|---|---|---|---|']
  for name, (config, overrides, label) in MOSI_MODELS.items():
    n = mamba_seeds if name == 'ssm_mamba' else seeds
    out = sweep.run(_spec(config), [], n, os.path.join(workdir, 'mosi', name), overrides)
    aggs = {m: sweep.aggregate(out['rows'], m)['base'] for m in MOSI_METRICS}
    runs = [os.path.join(workdir, 'mosi', name, 'base', f'seed{s}') for s in range(n)]
    rows.append(f'| {label} | {n} | {_cells(aggs, MOSI_METRICS, sweep.percent_scale)} '
                f'{sweep.mean_train_seconds(runs):.0f} | {sweep.trained_on(runs)} |')
  return '\n'.join(rows)


def erc_study(workdir: str, seeds: int, corpora) -> str:
  rows = ['| corpus | model | seeds | weighted F1 | accuracy | macro F1 | train s/run | trained on |',
          '|---|---|---|---|---|---|---|---|']
  for corpus in corpora:
    out = sweep.run(_spec(f'erc:broadmamba,{corpus}'), [], seeds,
                    os.path.join(workdir, 'erc', corpus), _steps(ERC_STEPS[corpus]))
    aggs = {m: sweep.aggregate(out['rows'], m)['base'] for m in ERC_METRICS}
    runs = [os.path.join(workdir, 'erc', corpus, 'base', f'seed{s}') for s in range(seeds)]
    rows.append(f'| {corpus} | BroadMamba (text) | {seeds} | '
                f'{_cells(aggs, ERC_METRICS, lambda m: 100)} '
                f'{sweep.mean_train_seconds(runs):.0f} | {sweep.trained_on(runs)} |')
  return '\n'.join(rows)


def ser_study(workdir: str, folds) -> str:
  rows = ['| model | params | folds | RAVDESS WAR (8 classes) | RAVDESS macro F1 | '
          'EmoDB accuracy (6 shared) | EmoDB UAR (6 shared) | train s/run | trained on |',
          '|---|---|---|---|---|---|---|---|---|']
  per_fold = []
  for name, (config_name, label) in SER_MODELS.items():
    war, mf1, acc, uar, params, runs = [], [], [], [], 0, []
    for fold in folds:
      run_dir = os.path.join(workdir, 'ser', name, f'fold{fold}')
      spec = _spec(config_name, f'fold{fold}')
      sweep.run(spec, [], 1, run_dir, _steps(SER_STEPS))
      run = os.path.join(run_dir, 'base', 'seed0')
      runs.append(run)
      with open(os.path.join(run, 'results.json')) as f:
        res = json.load(f)
      config = config_lib.load(spec, [*_steps(SER_STEPS), 'seed=0'])
      emodb = studies.emodb_scores(config, run)
      war.append(res['test']['accuracy'])
      mf1.append(res['test']['macro_f1'])
      acc.append(emodb['accuracy'])
      uar.append(emodb['uar'])
      params = res.get('num_params', params)
      per_fold.append(f'- {label}, fold {fold}: RAVDESS WAR {100 * war[-1]:.2f}, EmoDB '
                      f'accuracy {100 * acc[-1]:.2f}')
    cell = lambda v: f'{100 * np.mean(v):.2f} +- {100 * np.std(v):.2f}'  # noqa: E731
    rows.append(f'| {label} | {params:,} | {len(folds)} | {cell(war)} | {cell(mf1)} | '
                f'{cell(acc)} | {cell(uar)} | {sweep.mean_train_seconds(runs):.0f} | '
                f'{sweep.trained_on(runs)} |')
  return '\n'.join(rows) + '\n\nPer fold:\n' + '\n'.join(per_fold)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', default='/tmp/affectjax_ssm')
  p.add_argument('--studies', default='mosi,erc,ser')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--mamba-seeds', type=int, default=1,
                 help='seeds of the MOSI selective-SSM model (about 1 s/step on 2 CPU cores)')
  p.add_argument('--corpora', default='iemocap')
  p.add_argument('--folds', default='1,2,3,4,5,6')
  p.add_argument('--results', default=os.path.join(REPO, 'experiments', 'ssm', 'RESULTS.md'))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('affectjax').setLevel(logging.INFO)
  start = time.time()
  studies = args.studies.split(',')
  sections = []
  if 'mosi' in studies:
    sections.append(f"""## Contextual sentiment on CMU-MOSI

Poria et al. 2017 utterance features and split (62 train videos, 31 test; validation carved
from the training videos), one example per video; per-utterance sentiment regression (L1),
checkpoint chosen on validation MAE. Test metrics (Acc-2 and F1 in %: non-0 excludes
neutral labels, has-0 counts 0 as non-negative), mean +- std over seeds.
Published binary accuracy on these features: bc-LSTM 80.3 (Poria et al. 2017), MMMU-BA
82.31 (Ghosal et al. 2018). Validation scores are near 99% Acc-2 because the feature
extractors were trained on the training videos, so validation says little about test.

{mosi_study(args.workdir, args.seeds, args.mamba_seeds)}
""")
  if 'erc' in studies:
    sections.append(f"""## Emotion recognition in conversation

BroadMamba (bidirectional selective-SSM context, broad-learning expansion,
probability-guided fusion over the modalities present: text only here, frozen
all-MiniLM-L6-v2 embeddings), {', '.join(f'{c} {ERC_STEPS[c]} steps' for c in
args.corpora.split(','))} of 16 dialogues; checkpoint on validation weighted F1; test
metrics in %. Published weighted F1 (their own features): IEMOCAP DialogueGCN 64.18,
MMGCN 66.22, COGMEN 67.63; MELD DialogueGCN 58.10, MMGCN 58.65.

{erc_study(args.workdir, args.seeds, args.corpora.split(','))}
""")
  if 'ser' in studies:
    folds = [int(f) for f in args.folds.split(',')]
    sections.append(f"""## Speech emotion recognition on RAVDESS, cross-corpus on EmoDB

Log-mel frames (25 ms windows, 20 ms hop, 64 bands) computed in the input pipeline from
the 16 kHz FLAC files after trimming silence; speaker-independent actor folds
(ravdess/actor_folds.json; validation = two actors of the next fold); {SER_STEPS} steps of
32 clips, seed 0, checkpoint on validation accuracy. WAR = accuracy over the test actors'
clips. EmoDB: every clip of neutral, happiness, sadness, anger, fear and disgust (454),
resampled to 16 kHz, scored by the same checkpoint with its logits restricted to those six
classes (chance 1/6). Mean +- std over folds.

{ser_study(args.workdir, folds)}
""")
  wall = time.time() - start
  argv_str = ' '.join(argv if argv is not None else sys.argv[1:])
  text = f"""# State-space models on affect sequences

Generated by `experiments/ssm/run.py` on {datetime.date.today().isoformat()}; do not edit by hand.

Command: `AFFECTJAX_DATA_DIR=../shared/data python experiments/ssm/run.py {argv_str}`

Hardware of this invocation: {hardware.describe()}. Wall time: {wall / 60:.1f} min for this
invocation (finished runs are read back, so a re-run that trains nothing takes seconds; each
table's last column says where its runs trained).

{chr(10).join(sections)}"""
  os.makedirs(os.path.dirname(args.results), exist_ok=True)
  with open(args.results, 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
