r"""Audio masked-autoencoder pretraining, then fine-tuning, for speech emotion on RAVDESS
(cross-corpus on EmoDB); writes experiments/mae/RESULTS.md and one reconstruction PNG
per pretraining run.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/mae/run.py --workdir /tmp/affectjax_mae

Per speaker-independent actor fold (`--folds`; test = the fold's 4 actors, validation =
the next fold's 4 actors, the other 16 train), every run through `affectjax train`'s loop:
- pretrain: configs/ravdess_audiomae.py, the 16 training actors' speech plus every EmoDB
  clip (535), without labels; checkpoint chosen on the validation actors' reconstruction
  error. The fold's test actors are never seen.
- scratch: configs/ravdess_audiomae_classifier.py, the same encoder and head from a
  random initialisation. Both classifiers hide whole time rows and frequency columns
  of patches in training (the config's `model.time_mask`, `model.freq_mask`).
- finetune: the same, the encoder loaded from the fold's pretraining run (config.init),
  trained at 0.1x the head's rate; finetune_full: at the head's rate; probe: loaded and
  frozen, a linear head.
- ssm, transformer: supervised baselines, configs/ravdess_speech.py:ssm and
  configs/ravdess_speech.py:transformer (experiments/ssm's SpeechSSM and SpeechTransformer on
  log-mel frames) with this study's validation actors and normalisation, trained for
  `--baseline-steps` (experiments/ssm trains them for 300).
Classifiers are selected on validation accuracy; the table gives test UAR and WAR at that
checkpoint and at the last step (with both fine-tuning rates, one more row takes, per fold,
the rate whose selected checkpoint has the higher validation accuracy), and the selected
checkpoint's EmoDB scores (the six emotions EmoDB shares with RAVDESS, logits restricted
to them; EmoDB's audio was in the pretraining data without labels, so the MAE rows' EmoDB
columns are transductive). Reference row: logistic regression (`metrics.linear_probe`) on
log-mel statistics of the training actors' clips. Apart from that per-fold choice of rate
on validation, no setting is tuned: every run uses its config's defaults plus the step
counts below, so nothing is chosen on test. Finished runs are read back, so an interrupted
study resumes, and a study that asks for more classifiers trains only the missing ones.
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

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import hardware, plots, studies, train
from affectjax import experiment
from affectjax import workdir as workdir_lib
from affectjax.data import ravdess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(REPO, 'experiments', 'mae')
CLASSIFIERS = {'scratch': '', 'finetune': 'finetune', 'finetune_full': 'finetune,fullrate',
               'probe': 'probe'}
# Supervised frame-level baselines of experiments/ssm (their own configs, this study's
# folds, validation actors and normalisation), trained for `--baseline-steps`.
BASELINES = {'ssm': 'ssm', 'transformer': 'transformer'}  # configs/ravdess_speech.py's models.
KNOWN = (*CLASSIFIERS, *BASELINES)
LABELS = {'scratch': 'same encoder from scratch',
          'probe': 'MAE-pretrained encoder, frozen, linear head',
          'finetune': 'MAE-pretrained encoder, fine-tuned (encoder at 0.1x)',
          'finetune_full': 'MAE-pretrained encoder, fine-tuned (encoder at 1.0x)',
          'finetune_selected': 'MAE-pretrained encoder, fine-tuned, rate chosen per fold on '
                               'validation',
          'ssm': 'SpeechSSM (S5) on log-mel frames, supervised',
          'transformer': 'SpeechTransformer on log-mel frames, supervised'}
ORDER = ('ssm', 'transformer', 'scratch', 'probe', 'finetune', 'finetune_full',
         'finetune_selected')
RATES = {'finetune': '0.1x', 'finetune_full': '1.0x'}
NUM_CLASSES = len(ravdess.EMOTIONS)


def _steps(n: int, every: int, args) -> list[str]:
  return [f'train.num_steps={n}', f'train.eval_every={every}', f'train.log_every={every}',
          f'data.audio_norm={args.audio_norm}']


def configs(fold: int, workdir: str, args) -> dict:
  """(config, run directory) of every run of one fold, all resolved before any training."""
  extra = f',{args.size}' + (',smoke' if args.smoke else '')
  pre_dir = os.path.join(workdir, f'fold{fold}', 'pretrain')
  spec = lambda name, v='', size=extra: os.path.join(  # noqa: E731
      REPO, 'configs', f'{name}.py') + f':fold{fold}{size}' + (f',{v}' if v else '')
  out = {'pretrain': (config_lib.load(spec('ravdess_audiomae'),
                                      _steps(args.pretrain_steps, args.pretrain_every, args)),
                      pre_dir)}
  for run in args.classifiers.split(','):
    if run in BASELINES:  # No size variants; validation as the MAE classifiers' (4 actors).
      overrides = [*_steps(args.baseline_steps, args.finetune_every, args), 'data.num_valid=4']
      out[run] = (config_lib.load(spec('ravdess_speech', BASELINES[run], size=',smoke' if args.smoke else ''),
                                  overrides), os.path.join(workdir, f'fold{fold}', run))
      continue
    variant = CLASSIFIERS[run]
    overrides = _steps(args.finetune_steps, args.finetune_every, args)
    if variant:
      overrides.append(f'init.workdir={pre_dir}')
    out[run] = (config_lib.load(spec('ravdess_audiomae_classifier', variant), overrides),
                os.path.join(workdir, f'fold{fold}', run))
  return out


def reconstruction_png(config, workdir: str, path: str, clips: int = 4) -> None:
  """Log-mel, masked input and reconstruction of the first test clip of each of
  `clips` test actors, with the evaluation's fixed mask, from the best checkpoint."""
  dataset, exp = experiment.setup(config)
  ckpt = checkpoint_lib.Checkpoints(workdir)
  try:
    params = ckpt.restore_best(exp.abstract_state.params)
  finally:
    ckpt.close()
  test = dataset.splits['test']
  first = {}
  for i in range(len(test)):  # One clip per actor, the same clips on every rerun.
    first.setdefault(i // max(len(test) // clips, 1), i)
  idx = np.asarray(sorted(first.values())[:clips])
  batch = test.get_batch(idx)
  batch['mask'] = np.ones(len(idx), np.float32)
  out = exp.apply_eval(params, batch)  # The evaluation's own masks.
  patch = tuple(config.model.patch)
  x = np.asarray(batch['audio'])  # (B, T, F), cropped to whole patches as the model does.
  x = x[:, :x.shape[1] // patch[0] * patch[0], :x.shape[2] // patch[1] * patch[1]]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  plots.reconstruction_png(
      x, out['masked'], out['prediction'], patch, batch['frame_mask'], path,
      f'{os.path.basename(path)}: {int(100 * config.model.mask_ratio)}% of {patch[0]} x '
      f'{patch[1]} patches hidden, best checkpoint', norm_targets=config.model.norm_targets,
      row_names=[f'test clip {int(i)}' for i in idx])


def reference(config) -> dict:
  """Logistic regression on log-mel statistics of the training actors' clips."""
  dataset, _ = experiment.setup(config)
  s = dataset.splits
  return studies.logistic_reference(
      studies.log_mel_statistics(s['train']), s['train'].arrays['label'],
      studies.log_mel_statistics(s['test']), s['test'].arrays['label'], NUM_CLASSES)


def run_fold(fold: int, workdir: str, args) -> dict:
  path = os.path.join(workdir, f'fold{fold}', 'summary.json')
  summary = {'fold': fold, 'runs': {}, 'train_s': {}, 'steps': {}}
  if os.path.exists(path):
    with open(path) as f:
      summary = json.load(f)
  runs = configs(fold, workdir, args)
  todo = [name for name in runs if name not in summary['runs']]
  if not todo:
    return summary
  for name in todo:
    config, run_dir = runs[name]
    logging.info('fold %d: %s', fold, name)
    results = train.train_and_evaluate(config, run_dir)
    entry = {'valid': results['valid'], 'test': results['test'],
             'best_step': results['best_step']}
    if name != 'pretrain':
      entry['last'] = studies.checkpoint_metrics(config, run_dir, 'latest')
      entry['emodb'] = studies.emodb_scores(config, run_dir)
    else:
      entry['train_clips'] = len(experiment.setup(config)[0].splits['train'])
      png = os.path.join(args.figures, f'reconstruction_fold{fold}.png')
      reconstruction_png(config, run_dir, png)
    summary['runs'][name] = entry
    summary['train_s'][name] = results['timing']['train_s']
    summary['steps'][name] = config.train.num_steps
    summary['batch'] = config.train.batch_size
  first = runs[_mae_runs(args)[0]][0]
  if 'reference' not in summary:  # Computed once per fold, not on every added classifier.
    summary['reference'] = reference(first)
    summary['test_size'] = len(experiment.setup(first)[0].splits['test'])
  workdir_lib.write_atomic(path, 'the fold summary', lambda f: json.dump(summary, f, indent=1))
  return summary


def _mae_runs(args) -> list[str]:
  """The asked classifiers that use the MAE encoder (every study has at least one)."""
  return [r for r in args.classifiers.split(',') if r in CLASSIFIERS]


def select_rate(summaries: list[dict]) -> list[str]:
  """Per fold, with both fine-tuning rates trained: adds a `finetune_selected` entry, the
  rate whose validation-selected checkpoint has the higher validation accuracy (the
  trainer's own selection metric; ties keep 0.1x), and returns each fold's choice."""
  if not all('finetune' in s['runs'] and 'finetune_full' in s['runs'] for s in summaries):
    return []
  chosen = []
  for s in summaries:
    acc = {k: s['runs'][k]['valid']['accuracy'] for k in RATES}
    pick = 'finetune_full' if acc['finetune_full'] > acc['finetune'] else 'finetune'
    s['runs']['finetune_selected'] = s['runs'][pick]
    chosen.append(f"fold {s['fold']} {RATES[pick]} (validation accuracy "
                  f"{100 * acc['finetune']:.1f} at 0.1x, {100 * acc['finetune_full']:.1f} "
                  'at 1.0x)')
  return chosen


def tables(summaries: list[dict], shared: int, transductive: bool) -> str:
  """The speech table; `transductive`: EmoDB's clips were in the pretraining set, which
  the EmoDB column headers then say."""
  emodb = f'EmoDB {{}} ({shared} shared{"; transductive: in pretraining" if transductive else ""})'
  ms = studies.mean_std
  r = lambda run, split, key: [s['runs'][run][split][key] for s in summaries]  # noqa: E731
  lines = ['| model | test UAR (selected) | test WAR (selected) | test UAR (last step) | '
           f'test WAR (last step) | {emodb.format("UAR")} | {emodb.format("WAR")} |',
           '|---|---|---|---|---|---|---|',
           f'| logistic regression on log-mel statistics | '
           f'{ms([s["reference"]["uar"] for s in summaries])} | '
           f'{ms([s["reference"]["accuracy"] for s in summaries])} | | | | |']
  for run in [r for r in ORDER if all(r in s['runs'] for s in summaries)]:
    lines.append(f'| {LABELS[run]} | {ms(r(run, "test", "uar"))} | '
                 f'{ms(r(run, "test", "accuracy"))} | {ms(r(run, "last", "uar"))} | '
                 f'{ms(r(run, "last", "accuracy"))} | {ms(r(run, "emodb", "uar"))} | '
                 f'{ms(r(run, "emodb", "accuracy"))} |')
  return '\n'.join(lines)


def target_lines(summaries: list[dict]) -> str:
  mean = lambda xs: 100 * float(np.mean(xs))  # noqa: E731
  run = lambda name: mean([s['runs'][name]['test']['uar'] for s in summaries])  # noqa: E731
  logreg = mean([s['reference']['uar'] for s in summaries])
  verdict = lambda ok: 'met' if ok else 'not met'  # noqa: E731
  have = summaries[0]['runs']
  lines = []
  best = next((r for r in ('finetune_selected', 'finetune', 'finetune_full') if r in have), None)
  if best:
    ft = run(best)
    lines.append(f'- Target: the MAE-initialised encoder ({LABELS[best]}) above 60 UAR: '
                 f'{ft:.1f} ({verdict(ft > 60)}).')
    if 'scratch' in have:
      lines.append(f'- Target: at least 5 points above the same encoder from scratch: '
                   f"{ft - run('scratch'):+.1f} ({verdict(ft - run('scratch') >= 5)}).")
  for r in (r for r in ('scratch', *BASELINES) if r in have):
    lines.append(f'- Baseline check: {LABELS[r]} {run(r):.1f} UAR against logistic regression '
                 f'on log-mel statistics {logreg:.1f} '
                 f'({"beats" if run(r) > logreg else "does not beat"} it).')
  return '\n'.join(lines)


def emodb_levels(config) -> str:
  """Each shared emotion's mean peak amplitude and RMS (over samples above -80 dBFS) in
  EmoDB's files as read: whether the corpus keeps the level differences between emotions
  that RAVDESS-trained models read."""
  import soundfile as sf
  names = {v: k for k, v in ravdess.EMODB_TO_RAVDESS.items()}
  peak, rms = {}, {}
  for f in ravdess._emodb_files(config):
    letter = os.path.basename(f)[5]
    if letter not in ravdess.EMODB_TO_RAVDESS:
      continue
    x = np.abs(sf.read(f, dtype='float32', always_2d=True)[0][:, 0])
    peak.setdefault(letter, []).append(x.max())
    rms.setdefault(letter, []).append(np.sqrt(np.mean(x[x > 1e-4] ** 2)))
  order = [names[c] for c in ravdess.SHARED_CLASSES if names[c] in peak]
  label = lambda c: ravdess.EMOTIONS[ravdess.EMODB_TO_RAVDESS[c]]  # noqa: E731
  return (', '.join(f'{label(c)} {np.mean(peak[c]):.2f}' for c in order) + '; RMS: ' +
          ', '.join(f'{label(c)} {np.mean(rms[c]):.3f}' for c in order))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--folds', default='1,2,3,4,5,6')
  p.add_argument('--size', default='tiny', help='model size variant of both configs')
  p.add_argument('--pretrain-steps', type=int, default=3000)
  p.add_argument('--pretrain-every', type=int, default=500)
  p.add_argument('--finetune-steps', type=int, default=1500)
  p.add_argument('--finetune-every', type=int, default=100)
  p.add_argument('--classifiers', default='scratch,finetune,finetune_full,probe,ssm,transformer',
                 help=f'which of {",".join(KNOWN)} to train per fold')
  p.add_argument('--baseline-steps', type=int, default=1500,
                 help='training steps of the supervised ssm and transformer baselines')
  p.add_argument('--audio-norm', default='train', choices=ravdess.NORMS,
                 help="log-mel statistics: the training actors' (train), each clip's own "
                 "(clip), or each speaker's (speaker; named in the table)")
  p.add_argument('--smoke', action='store_true', help='tiny runs (tests)')
  p.add_argument('--figures', default=HERE, help='where the reconstruction PNGs go')
  p.add_argument('--out', default=os.path.join(HERE, 'RESULTS.md'))
  args = p.parse_args(argv)
  unknown = [r for r in args.classifiers.split(',') if r not in KNOWN]
  if unknown or not _mae_runs(args):
    p.error(f'--classifiers: {", ".join(unknown) or "none of " + ",".join(CLASSIFIERS)} '
            f'(known: {",".join(KNOWN)}; at least one MAE classifier)')
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s',
                      datefmt='%H:%M:%S')
  logging.getLogger('absl').setLevel(logging.ERROR)  # orbax's per-item restore notes
  folds = [int(f) for f in args.folds.split(',')]
  start = time.time()
  summaries = [run_fold(f, args.workdir, args) for f in folds]
  asked = ['pretrain', *args.classifiers.split(',')]
  for s in summaries:  # A fold's summary may hold runs an earlier invocation asked for.
    for key in ('runs', 'train_s', 'steps'):
      s[key] = {k: v for k, v in s[key].items() if k in asked}
  chosen = select_rate(summaries)
  total_min = sum(v for s in summaries for v in s['train_s'].values()) / 60
  steps, batch = summaries[0]['steps'], summaries[0]['batch']
  clips = summaries[0]['runs']['pretrain']['train_clips']
  epochs = steps['pretrain'] * batch / clips
  mae_run = _mae_runs(args)[0]
  first = configs(folds[0], args.workdir, args)
  facts = studies.ravdess_fold_facts(first[mae_run][0])
  actors = facts['actors']
  labelled = facts['clips']['train']  # The training actors' clips; the rest is unlabelled.
  unlabelled = ', '.join(first['pretrain'][0].data.unlabelled) or 'nothing'
  pre_model = first['pretrain'][0].model
  num_classes = first[mae_run][0].task.num_classes
  shared = len(ravdess.SHARED_CLASSES)
  ft_epochs = steps[mae_run] * batch / labelled
  base = [r for r in BASELINES if r in asked]
  baselines = (f" Supervised baselines ({', '.join(base)}): experiments/ssm's SpeechSSM and "
               'SpeechTransformer configs with the validation actors and normalisation above, '
               f"{steps[base[0]]} steps of {batch} ({steps[base[0]] * batch / labelled:.0f} "
               'epochs), selected on validation accuracy.' if base else '')
  train_s = {k: np.mean([s['train_s'][k] for s in summaries])
             for k in ('pretrain', *ORDER) if k in steps}
  pre = [s['runs']['pretrain'] for s in summaries]
  ms = studies.mean_std
  command = ('AFFECTJAX_DATA_DIR=../shared/data python experiments/mae/run.py --workdir W '
             f'--folds {args.folds} --size {args.size} --pretrain-steps {args.pretrain_steps} '
             f'--pretrain-every {args.pretrain_every} --finetune-steps {args.finetune_steps} '
             f'--finetune-every {args.finetune_every} --classifiers {args.classifiers}' +
             (f' --baseline-steps {args.baseline_steps}' if base else '') +
             (f' --audio-norm {args.audio_norm}' if args.audio_norm != 'train' else '') +
             (' --smoke' if args.smoke else ''))
  norm = {'train': 'No per-speaker normalisation: log-mel is standardised per band with the '
                   'training actors\' statistics (`data.audio_norm=train`), for every split '
                   'and EmoDB.',
          'clip': 'No per-speaker normalisation: each clip\'s log-mel is standardised over '
                  'its own frames (`data.audio_norm=clip`; level and spectral shape are '
                  'lost).'}.get(args.audio_norm,
          '**Per-speaker normalisation** (`data.audio_norm=speaker`, every row, the logistic '
          'regression included): each clip\'s log-mel is standardised with its speaker\'s '
          'statistics over all of that speaker\'s clips, test speakers included (their '
          'audio, never their labels): a known speaker-independent technique that changes '
          'the protocol.')
  levels = emodb_levels(first['pretrain'][0])
  model = first[mae_run][0].model
  hidden = (f'in training {100 * model.time_mask:.0f}% of the time rows and '
            f'{100 * model.freq_mask:.0f}% of the frequency columns of patches hidden per '
            "clip (AudioMAE's fine-tuning masking, the config's default, from scratch and "
            'fine-tuned alike)' if model.time_mask or model.freq_mask else
            'no training masking')
  rates = ('\nFine-tuning rate chosen per fold on validation: ' + '; '.join(chosen) + '.\n'
           if chosen else '')
  figures = ', '.join(f'[fold {f}](reconstruction_fold{f}.png)' for f in folds)
  text = f"""# Audio masked autoencoder: RAVDESS speech emotion, EmoDB cross-corpus

Generated by `{command}` on {datetime.date.today().isoformat()}; hardware: {hardware.describe()};
training time summed over every run of the study {total_min:.0f} min (this invocation
{(time.time() - start) / 60:.1f} min wall; finished folds are read back).
Folds {args.folds} ({len(folds)} speaker-independent actor folds: test = the fold's {actors['test']} actors,
validation = the next fold's {actors['valid']} actors, the other {actors['train']} train); mean +- std (ddof 1) over folds;
seed 0 in every run; model size `{args.size}`.

Pretraining: {clips} clips (the {actors['train']} training actors' {labelled} plus {clips - labelled} of
{unlabelled}), no labels; {steps['pretrain']} steps of {batch} ({epochs:.0f} epochs);
{100 * pre_model.mask_ratio:.0f}% of the {' x '.join(map(str, pre_model.patch))} (frames x mel bands)
log-mel patches hidden per clip; validation reconstruction error (per-patch normalised
targets, hidden patches) of the selected checkpoint {ms([x['valid']['loss'] for x in pre], 1.0, 3)},
test {ms([x['test']['loss'] for x in pre], 1.0, 3)}. Classifiers: {steps[mae_run]} steps of
{batch} ({ft_epochs:.0f} epochs over the {labelled} labelled training clips), mean-pooled encoder
tokens into a linear head, {hidden};
selected on validation accuracy.{baselines} Mean train seconds per run:
{', '.join(f'{k} {v:.0f}' for k, v in train_s.items())}.

{norm}
Every checkpoint and setting is chosen on validation, never on test. HiCMAE's reference code
validates its RAVDESS models on the test split, so its published figures are test-selected
and not comparable to the selected columns here.

## Speech emotion ({num_classes} classes; chance {100 / num_classes:.1f} WAR){', per-speaker normalisation' if args.audio_norm == 'speaker' else ''}

{tables(summaries, shared, 'emodb' in first['pretrain'][0].data.unlabelled)}

{target_lines(summaries)}
{rates}

EmoDB columns: the {shared} classes both corpora share, chance {100 / shared:.1f} UAR{
'' if 'emodb' not in first['pretrain'][0].data.unlabelled else
'; transductive: every EmoDB clip, without labels, is in the pretraining set'}. Its files
here, as read, have mean peak amplitude per emotion {levels}: peak-normalised per file, so the level differences between
emotions that RAVDESS keeps (and that `train` and `speaker` normalisation leave in the
features) are gone or inverted there; per-clip normalisation (`--audio-norm clip`) removes
level in both corpora.

## Reconstructions

Per pretraining run, four test clips (unseen actors): the log-mel, the masked input and the
reconstruction (visible patches as given, hidden ones predicted and put back in log-mel
units with each patch's own mean and std): {figures}.
"""
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  workdir_lib.write_atomic(args.out, 'the results table', lambda f: f.write(text))
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
