r"""Contrastive audio<->face pretraining on RAVDESS, then probing and fine-tuning;
writes experiments/contrastive/RESULTS.md.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/contrastive/run.py --workdir /tmp/affectjax_contrastive

Per speaker-independent actor fold (`--folds`; test = the fold's 4 actors, validation =
the next fold's 4 actors, 16 actors train), every run through `affectjax train`'s loop:
- pretrain_infonce / pretrain_sigmoid: configs/ravdess_contrastive.py (InfoNCE or the
  sigmoid loss), training actors only, no labels; checkpoint chosen on validation
  audio<->face retrieval (mean R@1). Its evaluation also fits a linear probe per tower on
  the training actors' frozen features (the "probe" rows of each tower alone).
- scratch, scratch_audio: configs/ravdess_av_classifier.py, both towers or the audio
  tower alone, random initialisation.
- probe: both pretrained towers loaded through config.init and frozen (config.optim.groups),
  a linear head trained on top.
- finetune: both pretrained towers loaded, trained at 0.1x the head's rate.
MOSI (`--mosi-seeds`, seeds 0..n-1; the release's own split, validation = 10 training
videos): configs/mosi_contrastive.py pretrains text, audio and video MLP towers on the
training videos without labels (InfoNCE over the three pairs, selected on validation
mean R@1); configs/mosi_towers.py trains the towers plus a fusion head for sentiment from
scratch, from the pretrained towers (fine-tuned at 0.1x), and on the frozen towers; a
ridge regression on the concatenated features (L2 chosen on validation MAE) is the
reference row.
Classifiers are selected on validation UAR; the table gives the test metrics at that
checkpoint and at the last step. Reference rows: logistic regression (the same NumPy
probe) on log-mel statistics, on the action units, and on both, fitted on the training
actors. Nothing is tuned here: every run uses its config's defaults, so nothing is
chosen on test. Runs that finished are read back, so an interrupted study resumes.
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
from affectjax import hardware, metrics, studies, train
from affectjax import experiment
from affectjax.data import ravdess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = {'pretrain_infonce': '', 'pretrain_sigmoid': 'sigmoid'}
CLASSIFIERS = {'scratch': '', 'scratch_audio': 'audio', 'probe': 'probe',
               'finetune': 'finetune'}
NUM_CLASSES = len(ravdess.EMOTIONS)


def _spec(name: str, fold: int, variant: str) -> str:
  return os.path.join(REPO, 'configs', f'{name}.py') + f':fold{fold}' + (
      f',{variant}' if variant else '')


def configs(fold: int, workdir: str, smoke: bool) -> dict:
  """(config, run directory) per run of one fold, all resolved before any training."""
  extra = ',smoke' if smoke else ''
  out = {}
  for run, variant in PRETRAIN.items():
    out[run] = (config_lib.load(_spec('ravdess_contrastive', fold, variant + extra)),
                os.path.join(workdir, f'fold{fold}', run))
  source = out['pretrain_infonce'][1]
  for run, variant in CLASSIFIERS.items():
    overrides = [f'init.workdir={source}'] if variant in ('probe', 'finetune') else []
    spec = _spec('ravdess_av_classifier', fold, (variant + extra).strip(','))
    out[run] = (config_lib.load(spec, overrides), os.path.join(workdir, f'fold{fold}', run))
  return out


def study_facts(fold: int, smoke: bool) -> dict:
  """What the text says about the runs, read from the fold's configs and data: actors and
  clips per split, batch, the towers, the probe's L2, classes; MOSI's towers and head."""
  from affectjax.data import get_dataset
  runs = configs(fold, '', smoke)
  pre, cls = runs['pretrain_infonce'][0], runs['scratch'][0]
  d = pre.data
  splits = get_dataset(pre).splits
  actors = ravdess.fold_actors(ravdess.read_folds(os.path.join(
      config_lib.data_dir(pre), 'ravdess', 'actor_folds.json')), d.fold, d.valid_actors)
  mosi = config_lib.load(os.path.join(REPO, 'configs', 'mosi_towers.py'))
  return {'actors': {k: len(v) for k, v in actors.items()},
          'train_clips': len(splits['train']), 'batch': pre.train.batch_size,
          'n_mels': d.n_mels, 'frames_per_s': 1000 / d.hop_ms,
          'audio': pre.model.towers.audio.to_dict(), 'face': pre.model.towers.face.to_dict(),
          'face_dim': int(splits['train'].arrays['face'].shape[-1]),
          'probe_l2': pre.task.probe_l2, 'classes': cls.task.num_classes,
          'mosi_tower': mosi.model.towers.text.to_dict(), 'mosi_head': mosi.model.hidden}


def within_actor_retrieval(config, workdir: str) -> dict:
  """Audio<->face R@1 and R@5 among one test actor's clips (so that recognising the
  actor does not count), averaged over the test actors; chance 1/n and 5/n."""
  dataset, exp = experiment.setup(config)
  eval_step = exp.lower_eval_step(config.train.eval_batch_size).compile()
  ckpt = checkpoint_lib.Checkpoints(workdir)
  params = ckpt.restore_best(exp.abstract_state.params)
  ckpt.close()
  test = dataset.splits['test']
  out = experiment.eval_outputs(exp, eval_step, params, test, config.train.eval_batch_size)
  actors = test.arrays['actor']
  result, sizes = {}, []
  for a in np.unique(actors):
    rows = actors == a
    sizes.append(int(rows.sum()))
    for q, k in (('audio', 'face'), ('face', 'audio')):
      r = metrics.retrieval_metrics(out[f'embedding/{q}'][rows], out[f'embedding/{k}'][rows])
      for key in ('r1', 'r5'):
        result.setdefault(f'{q}_to_{k}/{key}', []).append(r[key])
  result = {k: float(np.mean(v)) for k, v in result.items()}
  result['clips_per_actor'] = float(np.mean(sizes))
  return result


def reference_rows(config) -> dict:
  """Logistic regression on feature statistics, fitted on the training actors."""
  dataset, _ = experiment.setup(config)
  s = dataset.splits
  feats = {split: {'log-mel statistics': studies.log_mel_statistics(s[split]),
                   'action units': s[split].arrays['face']} for split in ('train', 'test')}
  for split in feats:
    feats[split]['action units + log-mel statistics'] = np.concatenate(
        [feats[split]['action units'], feats[split]['log-mel statistics']], axis=1)
  return {name: studies.logistic_reference(feats['train'][name], s['train'].arrays['label'],
                                           feats['test'][name], s['test'].arrays['label'],
                                           NUM_CLASSES) for name in feats['train']}


def run_fold(fold: int, workdir: str, smoke: bool) -> dict:
  path = os.path.join(workdir, f'fold{fold}', 'summary.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  runs = configs(fold, workdir, smoke)
  summary = {'fold': fold, 'runs': {}, 'train_s': {}}
  for name, (config, run_dir) in runs.items():
    logging.info('fold %d: %s', fold, name)
    results = train.train_and_evaluate(config, run_dir)
    entry = {'valid': results['valid'], 'test': results['test'],
             'best_step': results['best_step']}
    if name in CLASSIFIERS:
      entry['last'] = studies.checkpoint_metrics(config, run_dir, 'latest')
    else:
      entry['within_actor'] = within_actor_retrieval(config, run_dir)
    summary['runs'][name] = entry
    summary['train_s'][name] = results['timing']['train_s']
    summary['steps'] = summary.get('steps', {})
    summary['steps'][name] = config.train.num_steps
  summary['reference'] = reference_rows(runs['scratch'][0])
  summary['test_size'] = len(experiment.setup(runs['scratch'][0])[0].splits['test'])
  with open(path + '.tmp', 'w') as f:
    json.dump(summary, f, indent=1)
  os.replace(path + '.tmp', path)
  return summary


MOSI_RUNS = {'mosi_pretrain': ('mosi_contrastive', ''), 'mosi_scratch': ('mosi_towers', ''),
             'mosi_finetune': ('mosi_towers', 'finetune'), 'mosi_probe': ('mosi_towers', 'probe')}
MOSI_KEYS = {'mae': 'MAE', 'corr': 'Corr', 'acc2': 'Acc-2', 'f1': 'F1', 'acc7': 'Acc-7'}


def ridge_reference(config) -> dict:
  """studies.ridge_reference on the run's own rows and modalities."""
  dataset, _ = experiment.setup(config)
  return studies.ridge_reference(dataset.splits, tuple(config.data.modalities))


def run_mosi(seed: int, workdir: str, smoke: bool) -> dict:
  path = os.path.join(workdir, 'mosi', f'seed{seed}', 'summary.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  root = os.path.dirname(path)
  pretrain_dir = os.path.join(root, 'mosi_pretrain')
  summary = {'seed': seed, 'runs': {}, 'train_s': {}, 'steps': {}}
  for name, (config_name, variant) in MOSI_RUNS.items():
    overrides = [f'seed={seed}'] + ([f'init.workdir={pretrain_dir}'] if variant else [])
    spec = os.path.join(REPO, 'configs', f'{config_name}.py') + ':' + ','.join(
        v for v in (variant, 'smoke' if smoke else '') if v)
    config = config_lib.load(spec.rstrip(':'), overrides)
    logging.info('MOSI seed %d: %s', seed, name)
    run_dir = os.path.join(root, name)
    results = train.train_and_evaluate(config, run_dir)
    entry = {'valid': results['valid'], 'test': results['test'],
             'best_step': results['best_step']}
    if name != 'mosi_pretrain':
      entry['last'] = studies.checkpoint_metrics(config, run_dir, 'latest')
    summary['runs'][name] = entry
    summary['train_s'][name] = results['timing']['train_s']
    summary['steps'][name] = config.train.num_steps
  summary['reference'] = ridge_reference(config)
  summary['test_size'] = len(experiment.setup(config)[0].splits['test'])
  with open(path + '.tmp', 'w') as f:
    json.dump(summary, f, indent=1)
  os.replace(path + '.tmp', path)
  return summary


def mosi_tables(summaries: list[dict]) -> str:
  r = lambda run, split, key: [s['runs'][run][split][key] for s in summaries]  # noqa: E731
  head = ' | '.join(f'test {v} (selected)' for v in MOSI_KEYS.values())
  fmt = lambda k, v: (studies.mean_std(v, 1.0, 3) if k in ('mae', 'corr')  # noqa: E731
                      else studies.mean_std(v))
  lines = [f'| model | {head} | test MAE (last step) | test Acc-2 (last step) |',
           '|---|' + '---|' * (len(MOSI_KEYS) + 2)]
  ref = [s['reference'] for s in summaries]
  l2s = sorted({x['l2'] for x in ref})
  lines.append(f'| ridge regression on text+audio+video features (L2 {", ".join(f"{x:g}" for x in l2s)} on validation) | '
               + ' | '.join(fmt(k, [x[k] for x in ref]) for k in MOSI_KEYS)
               + ' | | |')
  labels = {'mosi_scratch': 'towers + fusion head from scratch',
            'mosi_probe': 'InfoNCE-pretrained towers, frozen, fusion head',
            'mosi_finetune': 'InfoNCE-pretrained towers, fine-tuned (0.1x), fusion head'}
  for run, label in labels.items():
    lines.append(f'| {label} | ' + ' | '.join(
        fmt(k, r(run, 'test', k)) for k in MOSI_KEYS) +
        f' | {fmt("mae", r(run, "last", "mae"))} | {studies.mean_std(r(run, "last", "acc2"))} |')
  pre = [s['runs']['mosi_pretrain']['test']['mean_r1'] for s in summaries]
  m = lambda run, k: float(np.mean(r(run, 'test', k)))  # noqa: E731
  ridge = {k: float(np.mean([x[k] for x in ref])) for k in ('mae', 'acc2')}
  lines += ['', f"- Pretraining against scratch (same towers and head, same seeds): "
            f"fine-tuned MAE {m('mosi_finetune', 'mae') - m('mosi_scratch', 'mae'):+.3f}, "
            f"Acc-2 {100 * (m('mosi_finetune', 'acc2') - m('mosi_scratch', 'acc2')):+.1f} "
            f"points; frozen towers MAE "
            f"{m('mosi_probe', 'mae') - m('mosi_scratch', 'mae'):+.3f}.",
            f"- Baseline check: from scratch MAE {m('mosi_scratch', 'mae'):.3f}, Acc-2 "
            f"{100 * m('mosi_scratch', 'acc2'):.1f} against ridge MAE {ridge['mae']:.3f}, "
            f"Acc-2 {100 * ridge['acc2']:.1f}."]
  return '\n'.join(lines), studies.mean_std(pre)


def target_lines(summaries: list[dict]) -> str:
  """The issue's targets and the baseline check, stated from the measured means."""
  mean = lambda xs: 100 * float(np.mean(xs))  # noqa: E731
  run = lambda name, key: mean([s['runs'][name]['test'][key] for s in summaries])  # noqa: E731
  ref = lambda name: mean([s['reference'][name]['uar'] for s in summaries])  # noqa: E731
  verdict = lambda ok: 'met' if ok else 'not met'  # noqa: E731
  probe, finetune = run('pretrain_infonce', 'probe_audio/uar'), run('finetune', 'uar')
  scratch, scratch_audio = run('scratch', 'uar'), run('scratch_audio', 'uar')
  both, logmel = ref('action units + log-mel statistics'), ref('log-mel statistics')
  return '\n'.join([
      f'- Target: the pretrained audio tower alone, linearly probed, above 52 UAR: '
      f'{probe:.1f} ({verdict(probe > 52)}).',
      f'- Target: the fused fine-tuned model above 72 UAR: {finetune:.1f} '
      f'({verdict(finetune > 72)}).',
      f'- Baseline check: both towers from scratch {scratch:.1f} UAR against logistic '
      f'regression on action units + log-mel statistics {both:.1f} '
      f'({"beats" if scratch > both else "does not beat"} it); the audio tower from scratch '
      f'{scratch_audio:.1f} against logistic regression on log-mel statistics {logmel:.1f} '
      f'({"beats" if scratch_audio > logmel else "does not beat"} it).',
      f'- Pretraining against scratch (same towers, same folds): fine-tuned '
      f'{finetune - scratch:+.1f} UAR, frozen towers with the loop\'s linear head '
      f'{run("probe", "uar") - scratch:+.1f}.'])


def tables(summaries: list[dict]) -> str:
  n = len(summaries)
  r = lambda run, split, key: [s['runs'][run][split][key] for s in summaries]  # noqa: E731
  lines = ['| model | test UAR (selected) | test WAR (selected) | test UAR (last step) | '
           'test WAR (last step) |', '|---|---|---|---|---|']
  for name in summaries[0]['reference']:
    lines.append(f'| logistic regression on {name} | '
                 f'{studies.mean_std([s["reference"][name]["uar"] for s in summaries])} | '
                 f'{studies.mean_std([s["reference"][name]["accuracy"] for s in summaries])} | | |')
  labels = {'scratch_audio': 'audio tower from scratch',
            'scratch': 'audio + face towers from scratch',
            'probe': 'InfoNCE-pretrained towers, frozen, linear head (trained by the loop)',
            'finetune': 'InfoNCE-pretrained towers, fine-tuned (towers at 0.1x)'}
  for run, label in labels.items():
    lines.append(f'| {label} | {studies.mean_std(r(run, "test", "uar"))} | '
                 f'{studies.mean_std(r(run, "test", "accuracy"))} | {studies.mean_std(r(run, "last", "uar"))} | '
                 f'{studies.mean_std(r(run, "last", "accuracy"))} |')
  for run, loss in (('pretrain_infonce', 'InfoNCE'), ('pretrain_sigmoid', 'sigmoid')):
    for m in ('audio', 'face'):
      lines.append(f'| {loss}-pretrained {m} tower, linear probe (NumPy, training actors) | '
                   f'{studies.mean_std(r(run, "test", f"probe_{m}/uar"))} | '
                   f'{studies.mean_std(r(run, "test", f"probe_{m}/accuracy"))} | | |')
  emotion = '\n'.join(lines)
  size = summaries[0]['test_size']
  per_actor = summaries[0]['runs']['pretrain_infonce']['within_actor']['clips_per_actor']
  lines = ['| loss | audio->face R@1 | audio->face R@5 | face->audio R@1 | face->audio R@5 | '
           'within actor: audio->face R@1 | face->audio R@1 | median rank a->f |',
           '|---|---|---|---|---|---|---|---|']
  for run, loss in (('pretrain_infonce', 'InfoNCE'), ('pretrain_sigmoid', 'sigmoid')):
    w = lambda key: [s['runs'][run]['within_actor'][key] for s in summaries]  # noqa: E731
    lines.append(f'| {loss} | {studies.mean_std(r(run, "test", "audio_to_face/r1"))} | '
                 f'{studies.mean_std(r(run, "test", "audio_to_face/r5"))} | '
                 f'{studies.mean_std(r(run, "test", "face_to_audio/r1"))} | '
                 f'{studies.mean_std(r(run, "test", "face_to_audio/r5"))} | '
                 f'{studies.mean_std(w("audio_to_face/r1"))} | {studies.mean_std(w("face_to_audio/r1"))} | '
                 f'{studies.mean_std(r(run, "test", "audio_to_face/median_rank"), 1.0)} |')
  lines.append(f'| chance | {100 / size:.1f} | {500 / size:.1f} | {100 / size:.1f} | '
               f'{500 / size:.1f} | {100 / per_actor:.1f} | {100 / per_actor:.1f} | '
               f'{(size + 1) / 2:.1f} |')
  retrieval = '\n'.join(lines)
  return emotion, retrieval, n, size, per_actor


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--folds', default='1,2,3,4,5,6')
  p.add_argument('--mosi-seeds', type=int, default=5, help='MOSI seeds (0 skips MOSI)')
  p.add_argument('--smoke', action='store_true', help='tiny runs (tests)')
  p.add_argument('--out', default=os.path.join(REPO, 'experiments', 'contrastive',
                                               'RESULTS.md'))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s',
                      datefmt='%H:%M:%S')
  logging.getLogger('absl').setLevel(logging.ERROR)  # orbax's per-item restore notes
  folds = [int(f) for f in args.folds.split(',')]
  start = time.time()
  summaries = [run_fold(f, args.workdir, args.smoke) for f in folds]
  mosi = [run_mosi(seed, args.workdir, args.smoke) for seed in range(args.mosi_seeds)]
  emotion, retrieval, n, size, per_actor = tables(summaries)
  f = study_facts(folds[0], args.smoke)
  a, au, mt = f['actors'], f['audio'], f['mosi_tower']
  first_steps = next(iter(summaries[0]['steps'].values()))
  checks = target_lines(summaries)
  total_min = sum(v for x in [*summaries, *mosi] for v in x['train_s'].values()) / 60
  steps = summaries[0]['steps']
  train_s = {k: np.mean([s['train_s'][k] for s in summaries]) for k in steps}
  command = ('AFFECTJAX_DATA_DIR=../shared/data python experiments/contrastive/run.py '
             f'--workdir W --folds {args.folds} --mosi-seeds {args.mosi_seeds}' + (' --smoke' if args.smoke else ''))
  text = f"""# Contrastive pretraining: RAVDESS audio<->face, CMU-MOSI text/audio/video

Generated by `{command}` on {datetime.date.today().isoformat()}; hardware: {hardware.describe()};
training time summed over every run of the study {total_min:.0f} min (this invocation
{(time.time() - start) / 60:.1f} min wall; finished folds and seeds are read back).
Folds {args.folds} ({n} speaker-independent actor folds: test = the fold's {a['test']} actors, validation =
the next fold's {a['valid']} actors, the other {a['train']} train); mean +- std (ddof 1) over folds; seed 0 in every run.
Steps per run: {', '.join(f'{k} {v}' for k, v in steps.items())} (batch {f['batch']}: {f['train_clips']} training clips,
so {first_steps} steps are {first_steps * f['batch'] / f['train_clips']:.0f} epochs); mean train seconds per run: {', '.join(f'{k} {v:.0f}' for k, v in train_s.items())}.

Pretraining sees the training actors only, without labels; no per-speaker normalisation,
no extra data. Every checkpoint and setting is chosen on validation, never on test: the
classifiers on validation UAR (with the last step beside it), the pretraining runs on
validation retrieval (mean audio<->face R@1). The linear probes of the pretraining runs
are fitted on the training actors' frozen tower features (multinomial logistic regression,
L2 {f['probe_l2']:g}, standardised features) at the selected checkpoint. Audio: {f['n_mels']} log-mel bands at
{f['frames_per_s']:g} frames/s, {au.get('stride', 1)} frames per token, a {au.get('num_layers')}-layer {au['kind']} of width {au['width']}; face: the {f['face_dim']} OpenFace
action units of `ravdess/au_mfcc.npz`, a {f['face']['num_layers']}-layer {f['face']['kind'].upper()} of width {f['face']['width']}.

## Emotion recognition ({f['classes']} classes, test actors)

UAR = mean recall over classes, WAR = accuracy.

{emotion}

{checks}

## Audio<->face retrieval (test actors)

Over the whole test split ({size} clips) and within one actor's clips (about
{per_actor:.0f} each, averaged over the test actors), where knowing the actor does not help.

{retrieval}
"""
  if mosi:
    table, pre_r1 = mosi_tables(mosi)
    steps = mosi[0]['steps']
    train_s = {k: np.mean([m['train_s'][k] for m in mosi]) for k in steps}
    text += f"""
## CMU-MOSI: contrastive pretraining of three towers, then a fusion head

Sentiment regression (L1), the Poria et al. 2017 utterance features and split (62
training videos, 31 test videos; validation = 10 training videos); mean +- std (ddof 1)
over seeds 0..{len(mosi) - 1} (seed of every run: initialisation, dropout, data order).
Pretraining sees the training videos only, without labels; checkpoints are chosen on
validation (MAE for the regressors, mean R@1 for pretraining). Steps per run:
{', '.join(f'{k} {v}' for k, v in steps.items())}; mean train seconds per run:
{', '.join(f'{k} {v:.0f}' for k, v in train_s.items())}. Towers: one {mt['num_layers']}-layer {mt['kind'].upper()} of width {mt['width']}
per modality; the fusion head: one GELU layer of {f['mosi_head']} on the concatenated tower features.
Acc-2 is the non-0 (negative vs positive) accuracy, F1 its weighted F1, Acc-7 the rounded
7-class accuracy; MAE and Corr as values, the rest in %. Test mean R@1 of the pretrained
towers over the six directions: {pre_r1}% (chance {100 / mosi[0]['test_size']:.2f}%).
These features' extractors were trained on the training videos, so validation scores
are far above test and say little about test (experiments/mosi/RESULTS.md).

{table}
"""
  with open(args.out + '.tmp', 'w') as f:
    f.write(text)
  os.replace(args.out + '.tmp', args.out)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
