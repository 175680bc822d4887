r"""How long each RAVDESS config takes on this machine, measured, for its docstring.

For each config (fold 1, default variant) two short runs in fresh workdirs, of 10 and 50
steps with one evaluation each, give the time of a training step (their difference over 40
steps) and of an evaluation with its checkpoint (the rest); the config's full run is then
compile + num_steps x step + (num_steps / eval_every) x evaluation + the fixed start-up and
final test evaluation the runs measured. A first 2-step run warms the caches (decoded
audio); its wall time is reported as the first-time preparation when the audio cache was
empty.

  AFFECTJAX_DATA_DIR=../shared/data python experiments/benchmarks/config_times.py --write

`--write` puts the measured paragraph at the end of each config's docstring (replacing the
one it wrote before); without it the paragraphs are only printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from affectjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Config files, with the variant that picks the model where a file holds several.
CONFIGS = ('ravdess_speech:ssm', 'ravdess_speech:transformer', 'ravdess_audiomae',
           'ravdess_audiomae_classifier', 'ravdess_contrastive', 'ravdess_av_classifier')


def _run(config: str, workdir: str, overrides) -> tuple[float, dict]:
  cmd = [sys.executable, '-m', 'affectjax', 'train', '--config', config_lib.spec(config),
         '--workdir', workdir,
         *[f'--config.{o}' for o in overrides]]
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.time() - start
  if proc.returncode:
    raise SystemExit(f'config_times: {config} failed: {proc.stderr.strip()[-500:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    return wall, json.load(f)


def measure(name: str, tmp: str) -> dict:
  config = config_lib.load(config_lib.spec(name, 'fold1'))
  t = config.train
  cache = os.path.join(os.path.expanduser('~'), '.cache', 'affectjax', 'audio')
  cold = not os.path.isdir(cache) or not os.listdir(cache)
  warm_wall, _ = _run(name, os.path.join(tmp, f'{name.replace(":", "_")}_warm'),
                      ['train.num_steps=2', 'train.eval_every=2', 'optim.warmup_steps=0'])
  runs = {}
  for k in (10, 50):
    wall, res = _run(name, os.path.join(tmp, f'{name.replace(":", "_")}_{k}'),
                     [f'train.num_steps={k}', f'train.eval_every={k}', 'optim.warmup_steps=0'])
    runs[k] = (wall, res['timing'])
  step = (runs[50][1]['train_s'] - runs[10][1]['train_s']) / 40
  if step <= 0:
    raise SystemExit(f'config_times: {name}: 50 steps took no longer than 10; the machine '
                     'was busy, rerun it alone')
  evaluation = max(runs[10][1]['train_s'] - 10 * step, 0.0)
  fixed = runs[10][0] - runs[10][1]['train_s'] - runs[10][1]['compile_s']
  full = (runs[10][1]['compile_s'] + fixed + t.num_steps * step
          + (t.num_steps // t.eval_every) * evaluation)
  return {'config': name, 'num_steps': t.num_steps, 'eval_every': t.eval_every,
          'batch_size': t.batch_size, 'step_s': step, 'eval_s': evaluation,
          'compile_s': runs[10][1]['compile_s'], 'fixed_s': fixed, 'full_s': full,
          'first_wall_s': warm_wall if cold else None}


def _heading(name: str) -> str:
  """'Time on' for a file of one model, 'Time of :ssm on' for one of several."""
  picks = name.partition(':')[2]
  return f'Time of :{picks} on' if picks else 'Time on'


def sentence(m: dict, machine: str) -> str:
  return (f'{_heading(m["config"])} {machine}, measured by experiments/benchmarks/config_times.py: a '
          f'training step of {m["batch_size"]} clips takes {m["step_s"]:.2f} s, an evaluation '
          f'with its checkpoint {m["eval_s"]:.0f} s, compiling {m["compile_s"]:.0f} s, so the '
          f'default {m["num_steps"]} steps (evaluated every {m["eval_every"]}) take about '
          f'{m["full_s"] / 60:.0f} min per fold' + (
              f'; with an empty ~/.cache/affectjax a first 2-step run took '
              f'{m["first_wall_s"] / 60:.1f} min (decoding the audio once)'
              if m['first_wall_s'] else '') + '.')


def write_docstring(name: str, text: str) -> None:
  """Replaces the docstring's paragraph this script wrote before for `name` (it starts
  with its heading and names this script), or adds one at the docstring's end."""
  path = os.path.join(REPO, 'configs', f'{name.partition(":")[0]}.py')
  with open(path) as f:
    source = f.read()
  end = source.index('"""', source.index('"""') + 3)
  doc, rest = source[:end], source[end:]
  mine = re.compile(r'\n\n' + re.escape(_heading(name)) +
                    r' (?:(?!\n\n).)*?config_times\.py(?:(?!\n\n).)*', re.S)
  doc = mine.sub('', doc).rstrip('\n') + '\n\n' + _wrap(text) + '\n'
  with open(path, 'w') as f:
    f.write(doc + rest)


def _wrap(text: str, width: int = 90) -> str:
  lines, line = [], ''
  for word in text.split():
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f'{line} {word}' if line else word
  return '\n'.join(lines + [line])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--configs', default=','.join(CONFIGS))
  p.add_argument('--write', action='store_true', help="rewrite the configs' docstrings")
  p.add_argument('--write-from', default='', help='write the docstrings from the JSON lines '
                 'an earlier run of this script printed (its log), measuring nothing')
  args = p.parse_args(argv)
  from affectjax import hardware
  machine = f'{os.cpu_count()} cores of {hardware.cpu_name()}'
  if args.write_from:
    with open(args.write_from) as f:
      for line in f:
        if line.startswith('{'):
          m = json.loads(line)
          write_docstring(m['config'], sentence(m, m.get('machine', machine)))
    return 0
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.configs.split(','):
      m = {**measure(name, tmp), 'machine': machine}
      text = sentence(m, machine)
      print(json.dumps(m), flush=True)
      print(text, flush=True)
      if args.write:
        write_docstring(name, text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
