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


def _steps(n: int) -> list[str]:
  every = max(n // 8, 10)
  return [f'train.num_steps={n}', f'train.eval_every={every}', f'train.log_every={every}']


def _cells(aggs, metrics, scale) -> str:
  def cell(m):
    digits = 2 if scale(m) == 100 else 3  # Percentages, or MAE / correlation.
    mean, std, n = aggs[m]  # ddof 1 (sweep.aggregate); one seed has no spread to print.
    spread = f' +- {scale(m) * std:.{digits}f}' if n > 1 else ''
    return f'{scale(m) * mean:.{digits}f}{spread} |'
  return ' '.join(cell(m) for m in metrics)


def mosi_study(workdir: str, seeds: int, mamba_seeds: int) -> tuple[str, float]:
  """The MOSI table and the mean validation Acc-2 (non-0) over every run in it."""
  valid = []
  rows = ['| model | seeds | Acc-2 non-0 | F1 non-0 | Acc-2 has-0 | MAE | Corr | train s/run | trained on |',
          '|---|---|---|---|---|---|---|---|---|']
  for name, (config, overrides, label) in MOSI_MODELS.items():
    n = mamba_seeds if name == 'ssm_mamba' else seeds
    out = sweep.run(config_lib.spec(config), [], n, os.path.join(workdir, 'mosi', name), overrides)
    aggs = {m: sweep.aggregate(out['rows'], m)['base'] for m in MOSI_METRICS}
    valid += [r['valid_acc2'] for r in out['rows']]
    runs = [os.path.join(workdir, 'mosi', name, 'base', f'seed{s}') for s in range(n)]
    rows.append(f'| {label} | {n} | {_cells(aggs, MOSI_METRICS, sweep.percent_scale)} '
                f'{sweep.mean_train_seconds(runs):.0f} | {sweep.trained_on(runs)} |')
  return '\n'.join(rows), float(np.mean(valid))


def erc_study(workdir: str, seeds: int, corpora) -> tuple[str, int]:
  """The conversation table and the training batch (dialogues) its runs used."""
  rows = ['| corpus | model | seeds | weighted F1 | accuracy | macro F1 | train s/run | trained on |',
          '|---|---|---|---|---|---|---|---|']
  for corpus in corpora:
    out = sweep.run(config_lib.spec(f'erc:broadmamba,{corpus}'), [], seeds,
                    os.path.join(workdir, 'erc', corpus), _steps(ERC_STEPS[corpus]))
    aggs = {m: sweep.aggregate(out['rows'], m)['base'] for m in ERC_METRICS}
    runs = [os.path.join(workdir, 'erc', corpus, 'base', f'seed{s}') for s in range(seeds)]
    rows.append(f'| {corpus} | BroadMamba (text) | {seeds} | '
                f'{_cells(aggs, ERC_METRICS, lambda m: 100)} '
                f'{sweep.mean_train_seconds(runs):.0f} | {sweep.trained_on(runs)} |')
    batch = config_lib.load(config_lib.spec(f'erc:broadmamba,{corpus}'),
                            _steps(ERC_STEPS[corpus])).train.batch_size
  return '\n'.join(rows), batch


def ser_study(workdir: str, folds) -> tuple[str, dict]:
  """The speech table and what the text says about the runs, read from their configs and
  scores: log-mel settings, validation actors, steps, batch, the EmoDB clip count."""
  rows = ['| model | params | folds | RAVDESS UAR | RAVDESS WAR | RAVDESS macro F1 | '
          'EmoDB UAR (shared classes) | EmoDB accuracy (shared classes) | train s/run | '
          'trained on |',
          '|---|---|---|---|---|---|---|---|---|---|']
  per_fold, facts = [], {}
  for name, (config_name, label) in SER_MODELS.items():
    uar, war, mf1, acc, emodb_uar, params, runs = [], [], [], [], [], 0, []
    for fold in folds:
      run_dir = os.path.join(workdir, 'ser', name, f'fold{fold}')
      spec = config_lib.spec(config_name, f'fold{fold}')
      sweep.run(spec, [], 1, run_dir, _steps(SER_STEPS))
      run = os.path.join(run_dir, 'base', 'seed0')
      runs.append(run)
      with open(os.path.join(run, 'results.json')) as f:
        res = json.load(f)
      config = config_lib.load(spec, [*_steps(SER_STEPS), 'seed=0'])
      emodb = studies.emodb_scores(config, run)
      uar.append(res['test']['uar'])
      war.append(res['test']['accuracy'])
      mf1.append(res['test']['macro_f1'])
      acc.append(emodb['accuracy'])
      emodb_uar.append(emodb['uar'])
      params = res.get('num_params', params)
      d, t = config.data, config.train
      facts = {'window_ms': d.window_ms, 'hop_ms': d.hop_ms, 'n_mels': d.n_mels,
               'top_db': d.top_db, 'num_valid': d.num_valid, 'steps': t.num_steps,
               'batch': t.batch_size, 'classes': config.task.num_classes,
               'emodb_clips': emodb.get('clips'), 'select': t.select_metric}
      per_fold.append(f'- {label}, fold {fold}: RAVDESS UAR {100 * uar[-1]:.2f}, WAR '
                      f'{100 * war[-1]:.2f}, EmoDB UAR {100 * emodb_uar[-1]:.2f}')
    cell = lambda v: studies.mean_std(v, 100.0, 2)  # noqa: E731
    rows.append(f'| {label} | {params:,} | {len(folds)} | {cell(uar)} | {cell(war)} | '
                f'{cell(mf1)} | {cell(emodb_uar)} | {cell(acc)} | '
                f'{sweep.mean_train_seconds(runs):.0f} | {sweep.trained_on(runs)} |')
  return '\n'.join(rows) + '\n\nPer fold:\n' + '\n'.join(per_fold), facts


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
    mosi_table, valid_acc2 = mosi_study(args.workdir, args.seeds, args.mamba_seeds)
    sections.append(f"""## Contextual sentiment on CMU-MOSI

Poria et al. 2017 utterance features and split (62 train videos, 31 test; validation carved
from the training videos), one example per video; per-utterance sentiment regression (L1),
checkpoint chosen on validation MAE. Test metrics (Acc-2 and F1 in %: non-0 excludes
neutral labels, has-0 counts 0 as non-negative), mean +- std (ddof 1) over seeds.
Published binary accuracy on these features: bc-LSTM 80.3 (Poria et al. 2017), MMMU-BA
82.31 (Ghosal et al. 2018). Validation Acc-2 (non-0) averages {100 * valid_acc2:.1f} over
these runs: the feature extractors were trained on the training videos, so validation says
little about test.

{mosi_table}
""")
  if 'erc' in studies:
    erc_table, erc_batch = erc_study(args.workdir, args.seeds, args.corpora.split(','))
    sections.append(f"""## Emotion recognition in conversation

BroadMamba (bidirectional selective-SSM context, broad-learning expansion,
probability-guided fusion over the modalities present: text only here, frozen
all-MiniLM-L6-v2 embeddings), {', '.join(f'{c} {ERC_STEPS[c]} steps' for c in
args.corpora.split(','))} of {erc_batch} dialogues; checkpoint on validation weighted F1; test
metrics in %. Published weighted F1 (their own features): IEMOCAP DialogueGCN 64.18,
MMGCN 66.22, COGMEN 67.63; MELD DialogueGCN 58.10, MMGCN 58.65.

{erc_table}
""")
  if 'ser' in studies:
    from affectjax.data import audio, ravdess
    folds = [int(f) for f in args.folds.split(',')]
    table, f = ser_study(args.workdir, folds)
    shared = ', '.join(ravdess.EMOTIONS[c] for c in ravdess.SHARED_CLASSES)
    clips = f' ({f["emodb_clips"]} clips)' if f.get('emodb_clips') else ''
    sections.append(f"""## Speech emotion recognition on RAVDESS, cross-corpus on EmoDB

Log-mel frames ({f['window_ms']:g} ms windows, {f['hop_ms']:g} ms hop, {f['n_mels']} bands)
computed in the input pipeline from the {audio.SAMPLE_RATE // 1000} kHz FLAC files after
trimming silence below {f['top_db']:g} dB; speaker-independent actor folds
(ravdess/actor_folds.json; validation = {f['num_valid']} actors of the next fold);
{f['steps']} steps of {f['batch']} clips, seed 0, checkpoint on validation {f['select']}.
UAR = mean recall over the {f['classes']} classes, WAR = accuracy over the test actors'
clips. EmoDB: every clip of {shared}{clips}, resampled to
{audio.SAMPLE_RATE // 1000} kHz, scored by the same checkpoint with its logits restricted
to those {len(ravdess.SHARED_CLASSES)} classes (chance
{100 / len(ravdess.SHARED_CLASSES):.1f} UAR). Mean +- std (ddof 1) over folds.

{table}
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
