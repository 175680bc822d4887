r"""Early fusion, late fusion, TFN and LMF on the synthetic interaction benchmark.

Trains every model on every variant (redundant, unique, synergy) for several
seeds, writes `experiments/synthetic/RESULTS.md` and the table in README.md
between the `synthetic-table` markers. Each run is an ordinary resumable run
under --workdir; finished runs are read back, not retrained.

  python experiments/synthetic/run.py --workdir /tmp/affectjax_synthetic

Checkpoints are chosen on the validation split; the table reports test accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time

import numpy as np

from affectjax import hardware
from affectjax import config as config_lib
from affectjax import train
from affectjax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {'early': 'Early fusion', 'late': 'Late fusion', 'tfn': 'TFN', 'lmf': 'LMF'}
VARIANTS = ('redundant', 'unique', 'synergy')
START, END = '<!-- synthetic-table:start -->', '<!-- synthetic-table:end -->'




def run_all(workdir: str, seeds: int, models, variants, extra) -> dict:
  results = {}
  for variant in variants:
    for model in models:
      for seed in range(seeds):
        spec = os.path.join(REPO, 'configs', f'synthetic.py:{model},{variant}')
        config = config_lib.load(spec, [f'seed={seed}', *extra])
        run_dir = os.path.join(workdir, variant, model, f'seed{seed}')
        r = train.train_and_evaluate(config, run_dir)
        results[(variant, model, seed)] = r
        logging.getLogger('affectjax').info('%s %s seed %d: test accuracy %.4f', variant,
                                            model, seed, r['test']['accuracy'])
  return results


def oracle_row(variants, extra) -> str:
  """Test accuracy of the Bayes-optimal classifier (knows the generator): the ceiling."""
  cells = []
  for variant in variants:
    c = config_lib.load(os.path.join(REPO, 'configs', f'synthetic.py:tfn,{variant}'), extra)
    d = c.data
    test = synthetic.generate(variant, False, c.task.num_classes, d.dims,
                              {'train': d.num_train, 'valid': d.num_valid,
                               'test': d.num_test}, d.noise, d.seed,
                              d.unique_modality)['test']
    acc = synthetic.bayes_accuracy(test, variant, c.task.num_classes, d.dims, d.noise,
                                   d.seed, d.unique_modality)
    cells.append(f'{100 * acc:.1f}')
  return '| Bayes-optimal (oracle) | ' + ' | '.join(cells) + ' |'


def table(results: dict, models, variants, seeds: int, extra=(),
          metric: str = 'accuracy') -> str:
  head = '| model | ' + ' | '.join(variants) + ' |'
  rows = [head, '|' + '---|' * (len(variants) + 1), oracle_row(variants, extra)]
  for model in models:
    cells = []
    for variant in variants:
      vals = np.array([results[(variant, model, s)]['test'][metric] for s in range(seeds)])
      cells.append(f'{100 * vals.mean():.1f} +- {100 * vals.std(ddof=1):.1f}')
    rows.append(f'| {MODELS[model]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', default='/tmp/affectjax_synthetic')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--results', default=os.path.join(REPO, 'experiments', 'synthetic',
                                                   'RESULTS.md'))
  p.add_argument('--readme', default=os.path.join(REPO, 'README.md'),
                 help='README whose synthetic-table section is replaced ("" to skip)')
  p.add_argument('--override', action='append', default=[],
                 help='extra config override a.b=v applied to every run')
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(message)s')
  logging.getLogger('affectjax').setLevel(logging.INFO)
  models = args.models.split(',')
  variants = args.variants.split(',')
  if args.seeds < 2:
    p.error('--seeds must be >= 2 for a standard deviation')

  start = time.time()
  results = run_all(args.workdir, args.seeds, models, variants, args.override)
  wall = time.time() - start
  train_s = sum(r['timing']['train_s'] + r['timing']['compile_s'] for r in results.values())
  command = 'python experiments/synthetic/run.py ' + ' '.join(
      a for a in (argv if argv is not None else sys.argv[1:]))
  body = table(results, models, variants, args.seeds, args.override)
  num_classes = config_lib.load(os.path.join(REPO, 'configs', f'synthetic.py:{models[0]}'),
                                args.override).task.num_classes
  classes = 'Binary classification' if num_classes == 2 else f'{num_classes} classes'
  note = (f'Test accuracy (%), mean +- std over seeds 0..{args.seeds - 1}; checkpoint chosen '
          f'on validation accuracy. {classes} (chance {100 / num_classes:.1f}). '
          f'Hardware: {hardware.describe()}. Train+compile time summed over runs: {train_s / 60:.1f} min '
          f'(this invocation: {wall / 60:.1f} min wall).')
  with open(args.results, 'w') as f:
    f.write('# Synthetic interaction benchmark\n\n'
            'Generated by `experiments/synthetic/run.py` on '
            f'{datetime.date.today().isoformat()}; do not edit by hand.\n\n'
            f'Command: `{command.strip()}`\n\n{note}\n\n{body}\n\n'
            'Per-run results (valid and test metrics, best step, timing) are in '
            '`WORKDIR/<variant>/<model>/seed<k>/results.json`.\n')
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(
        args.readme, f'{START}\n{note}\n\n{body}\n\nRegenerate: `{command.strip()}`\n{END}',
        START, END)
  print(body)
  return 0


if __name__ == '__main__':
  sys.exit(main())
