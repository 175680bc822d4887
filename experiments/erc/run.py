r"""DialogueGCN, MMGCN and COGMEN on IEMOCAP and MELD from text, 5 seeds.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/erc/run.py --workdir /tmp/affectjax_erc

Text features: frozen all-MiniLM-L6-v2 sentence embeddings (`frozen`), and with
`--finetune` also the encoder fine-tuned end to end with the graph model (`finetune`,
much slower on a CPU); `--modes` picks any of frozen, finetune, finetune_split (the
graph model at learning rate 1e-3, the encoder's updates scaled by an optim.groups rule) and
adapted (the encoder first fine-tuned on utterances alone, then frozen: its run is the
graph model's `data.encoder_workdir`; the fine-tuning a CPU affords, as COSMIC's
features are made).
Stage 1 (model selection, validation only): for each corpus, model and text mode, the grid in SELECTION_GRID with seed 0; the highest
validation weighted F1 wins. Stage 2: the chosen setting with seeds 0..N-1. Each run
keeps its best-validation checkpoint; the table reports test metrics. Writes
experiments/erc/RESULTS.md. Both stages are `affectjax sweep`s, so an interrupted
study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time

from affectjax import config as config_lib
from affectjax import hardware
from affectjax import studies
from affectjax import sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {'dialoguegcn': 'DialogueGCN', 'mmgcn': 'MMGCN', 'cogmen': 'COGMEN'}
CORPORA = {'iemocap': 'IEMOCAP', 'meld': 'MELD'}
SOURCES = {'iemocap': 'IEMOCAP conversation pickle', 'meld': 'the official MELD CSVs'}
FLOOR_WINDOW = 3  # The context floor: each utterance with its +-3 neighbours' mean.
# Stage-1 grids per (text mode, model); DialogueGCN is the slowest, so only its learning rate.
SELECTION_GRID = {
    ('frozen', 'dialoguegcn'): ['optim.learning_rate=3e-4,1e-3'],
    ('frozen', 'mmgcn'): ['optim.learning_rate=3e-4,1e-3', 'model.dropout=0.1,0.4'],
    ('frozen', 'cogmen'): ['optim.learning_rate=3e-4,1e-3', 'model.dropout=0.1,0.3'],
    ('finetune', 'dialoguegcn'): ['optim.learning_rate=2e-5,5e-5'],
    ('finetune', 'mmgcn'): ['optim.learning_rate=2e-5,5e-5'],
    ('finetune', 'cogmen'): ['optim.learning_rate=2e-5,5e-5'],
    # The graph model at 1e-3, only the encoder's rate chosen: its updates scaled by 0.02 or
    # 0.05 (2e-5 or 5e-5) through an optim.groups rule.
    **{('finetune_split', m): ['optim.groups=(("encoder/.*",0.02),);(("encoder/.*",0.05),)']
       for m in MODELS},
}
SELECTION_GRID.update({('adapted', m): SELECTION_GRID[('frozen', m)] for m in MODELS})
MODES = ('frozen', 'finetune', 'finetune_split', 'adapted')
# `adapted`, stage 0: the encoder fine-tuned on utterances alone (ContextFree, 3 epochs of
# 32 utterances, head 1e-3, encoder 5e-5; one setting), one per seed, each read from its
# best-validation checkpoint; graph-model seed s then trains on the frozen features of
# adapter seed s (selection: seed 0), so the std includes the adapter's own seed.
ADAPT_STEPS = {'iemocap': 480, 'meld': 940}
ADAPT_OVERRIDES = ['optim.learning_rate=1e-3', 'optim.groups=(("encoder/.*",0.05),)']
# Steps per run (batch 16 dialogues): IEMOCAP has 108 training dialogues, MELD 1038.
# finetune_split trains as long as finetune.
STEPS = {('iemocap', 'frozen'): 400, ('meld', 'frozen'): 600,
         ('iemocap', 'finetune'): 150, ('meld', 'finetune'): 300}
PUBLISHED = {
    'iemocap': 'DialogueGCN 64.18, COSMIC 65.28, MMGCN 66.22, COGMEN 67.63',
    'meld': 'DialogueGCN 58.10, MMGCN 58.65, COSMIC 65.21',
}
METRICS = ('weighted_f1', 'accuracy', 'macro_f1')


def _spec(corpus, model, mode):
  return os.path.join(REPO, 'configs', f'erc.py:{model},{corpus}') + (
      ',finetune' if mode.startswith('finetune') else '')


def _schedule(steps):
  return [f'train.num_steps={steps}', f'train.eval_every={max(steps // 16, 10)}',
          f'train.log_every={max(steps // 16, 10)}']


def _overrides(corpus, mode, workdir):
  steps = STEPS[(corpus, 'finetune' if mode.startswith('finetune') else 'frozen')]
  extra = {'finetune_split': ['optim.learning_rate=1e-3'],
           'adapted': [f'data.encoder_workdir={_adapter_run(corpus, workdir)}']}
  return [*_schedule(steps), *extra.get(mode, [])]


def _adapter_run(corpus, workdir, seed='{seed}'):
  """Adapter seed `seed`'s run (`{seed}`: each sweep run's own), whose best checkpoint's
  encoder the adapted graph models read frozen (`config.data.encoder_workdir`)."""
  return os.path.join(workdir, 'adapt', corpus, 'base', f'seed{seed}')


def corpus_facts(corpus: str) -> dict:
  """Dialogues per split and classes of a corpus, read from its files."""
  from affectjax.data import erc as erc_data
  reader, where, labels = erc_data.CORPORA[corpus]
  config = config_lib.load(_spec(corpus, 'contextfree', 'frozen'))
  splits = reader(os.path.join(config_lib.data_dir(config), where))
  return {'dialogues': {k: len(v) for k, v in splits.items()},
          'classes': len(labels[config.data.label_field])}


def floors(corpus: str) -> dict:
  """The logistic-regression floors on the frozen embeddings the `frozen` rows read: each
  utterance alone, and with its +-FLOOR_WINDOW context mean (studies.dialogue_logistic_floor)."""
  from affectjax.data import get_dataset
  config = config_lib.load(_spec(corpus, 'contextfree', 'frozen'))
  splits = get_dataset(config).splits
  return {w: studies.dialogue_logistic_floor(splits, config.task.num_classes, w)
          for w in (0, FLOOR_WINDOW)}


def adapt(corpus, workdir, seeds) -> str:
  """Stage 0 of `adapted`: fine-tunes the encoder on utterances alone with seeds
  0..seeds-1 (skipped when done); returns the adapters' line for RESULTS.md."""
  spec = os.path.join(REPO, 'configs', f'erc.py:contextfree,{corpus}') + ',finetune,utterance'
  overrides = [*_schedule(ADAPT_STEPS[corpus]), *ADAPT_OVERRIDES]
  out = sweep.run(spec, [], seeds, os.path.join(workdir, 'adapt', corpus), overrides)
  runs = [_adapter_run(corpus, workdir, s) for s in range(seeds)]
  (valid, valid_std, _), (test, test_std, _) = (
      sweep.aggregate(out['rows'], 'weighted_f1', split)['base'] for split in ('valid', 'test'))
  return (f'- {corpus}: ContextFree fine-tuned on utterances alone, seeds 0..{seeds - 1}, '
          f'{ADAPT_STEPS[corpus]} steps, `{" ".join(ADAPT_OVERRIDES)}`: valid weighted F1 '
          f'{100 * valid:.2f} +- {100 * valid_std:.2f}, test weighted F1 '
          f'{100 * test:.2f} +- {100 * test_std:.2f} (no context; '
          f'{sweep.mean_train_seconds(runs):.0f} s per run on {sweep.trained_on(runs)})')


def select(corpus, model, mode, workdir) -> tuple[list[str], dict]:
  """Stage 1: the winning overrides and the validation weighted F1 of every cell."""
  grid = SELECTION_GRID[(mode, model)]
  out = sweep.run(_spec(corpus, model, mode), grid, 1,
                  os.path.join(workdir, 'select', mode, corpus, model),
                  _overrides(corpus, mode, workdir))
  return sweep.best_cell(out['rows'], grid, 'weighted_f1', 'max')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', default='/tmp/affectjax_erc')
  p.add_argument('--seeds', type=int, default=5)
  p.add_argument('--finetune-seeds', type=int, default=1)
  p.add_argument('--finetune', action='store_true', help='also fine-tune the text encoder')
  p.add_argument('--modes', default=None,
                 help=f'text modes to run, comma-separated ({",".join(MODES)}); default: '
                      'frozen, plus finetune with --finetune')
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--corpora', default=','.join(CORPORA))
  p.add_argument('--results', default=os.path.join(REPO, 'experiments', 'erc', 'RESULTS.md'))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger('affectjax').setLevel(logging.INFO)
  start = time.time()
  modes = (args.modes.split(',') if args.modes else
           ['frozen'] + (['finetune'] if args.finetune else []))
  if unknown := set(modes) - set(MODES):
    p.error(f'--modes: unknown text mode(s) {sorted(unknown)}; choose from {", ".join(MODES)}')
  table = ['| corpus | text | model | seeds | weighted F1 | accuracy | macro F1 | chosen |',
           '|---|---|---|---|---|---|---|---|']
  selection_lines, timing_lines = [], []
  adapter_lines = []
  facts = {c: corpus_facts(c) for c in args.corpora.split(',')}
  for corpus in args.corpora.split(','):
    if 'adapted' in modes:
      adapter_lines.append(adapt(corpus, args.workdir, args.seeds))
    for mode in modes:
      seeds = args.finetune_seeds if mode.startswith('finetune') else args.seeds
      for model in args.models.split(','):
        chosen, valid = select(corpus, model, mode, args.workdir)
        out = sweep.run(_spec(corpus, model, mode), [], seeds,
                        os.path.join(args.workdir, 'final', mode, corpus, model),
                        [*_overrides(corpus, mode, args.workdir), *chosen])
        aggs = {m: sweep.aggregate(out['rows'], m)['base'] for m in METRICS}
        cells = ' '.join(f'{100 * aggs[m][0]:.2f}' + (f' +- {100 * aggs[m][1]:.2f}'
                                                      if aggs[m][2] > 1 else '') + ' |'
                         for m in METRICS)
        label = f'{CORPORA[corpus]} ({facts[corpus]["classes"]} classes)'
        table.append(f'| {label} | {mode} | {MODELS[model]} | {seeds} | {cells} '
                     f'`{" ".join(chosen)}` |')
        selection_lines.append(
            f'- {corpus} / {mode} / {MODELS[model]}: ' +
            ', '.join(f'{c}: {100 * v:.2f}' for c, v in valid.items()))
        runs = [os.path.join(args.workdir, 'final', mode, corpus, model, 'base', f'seed{s}')
                for s in range(seeds)]
        timing_lines.append(f'- {corpus} / {mode} / {MODELS[model]}: '
                            f'{sweep.mean_train_seconds(runs):.0f} s on {sweep.trained_on(runs)}')
  wall = time.time() - start
  argv_str = ' '.join(argv if argv is not None else sys.argv[1:])
  adapters = ('Encoder adaptation for `adapted` (stage 0; graph-model seed s reads the '
              "features of adapter seed s, so the std above includes the adapter's seed):\n" +
              '\n'.join(adapter_lines) + '\n\n') if adapter_lines else ''
  published = '\n'.join(f'- {CORPORA[c]}: {PUBLISHED[c]}' for c in args.corpora.split(','))
  data = '; '.join(f"{SOURCES[c]} ({f['dialogues']['train']} train / {f['dialogues']['valid']} "
                   f"valid / {f['dialogues']['test']} test dialogues; {f['classes']} classes)"
                   for c, f in facts.items())
  floor = {c: floors(c) for c in facts}
  floor_lines = '\n'.join(
      f"- {CORPORA[c]}: weighted F1 {100 * f[0]['weighted_f1']:.1f} without context (L2 "
      f"{f[0]['l2']:g}), {100 * f[FLOOR_WINDOW]['weighted_f1']:.1f} with a +-{FLOOR_WINDOW} "
      f"utterance mean-context window (L2 {f[FLOOR_WINDOW]['l2']:g})" for c, f in floor.items())
  text = f"""# Emotion recognition in conversation: graph models from text

Generated by `experiments/erc/run.py` on {datetime.date.today().isoformat()}; do not edit by hand.

Command: `AFFECTJAX_DATA_DIR=../shared/data python experiments/erc/run.py {argv_str}`

Hardware of this invocation: {hardware.describe()} (runs finished earlier are read back;
the timing list below says where each row trained). Wall time: {wall / 60:.1f} min for this invocation (finished runs are
read back, so a re-run that trains nothing takes seconds).

Data: {data}. Text only: every utterance
is embedded by all-MiniLM-L6-v2 (mean pooling; `frozen`: embeddings computed once and
cached; `finetune`: the encoder is trained with the graph model at one learning rate;
`finetune_split`: the graph model at 1e-3 and the encoder at its own rate; `adapted`: frozen
embeddings from the encoder first fine-tuned on utterance labels alone, see below). Each run keeps the
checkpoint with the best validation weighted F1; the table gives test metrics in %, mean
+- std (ddof 1) over seeds 0..N-1 (N in the table; the mean alone for one seed).

{chr(10).join(table)}

Published weighted F1 (their own features, which for IEMOCAP include audio and video in
MMGCN and COGMEN):
{published}

Floors on the same frozen embeddings and splits, computed here: a logistic regression on
each utterance's embedding, its L2 chosen on validation weighted F1 (test metric in %):
{floor_lines}

{adapters}Model selection (stage 1, seed 0, validation weighted F1 per grid cell):
{chr(10).join(selection_lines)}

Training time per run (seconds of the train loop, mean over seeds):
{chr(10).join(timing_lines)}
"""
  os.makedirs(os.path.dirname(args.results), exist_ok=True)
  with open(args.results, 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
