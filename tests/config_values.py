"""Every config file and the variants it documents, resolved to flat values: the
before/after record of the configs rewrite (issue 38). `python tests/config_values.py
--write` stores the current resolution in tests/data/config_values.json; the test in
tests/test_config.py resolves the same runs through today's files (after the renames
in RENAMED) and compares, except for the fixes listed in INTENDED."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORED = os.path.join(REPO, 'tests', 'data', 'config_values.json')

_SYNTHETIC = ('', 'smoke', 'regression', 'redundant', 'unique,smoke', 'regression,smoke')
_MOSI = ('', 'smoke', 'ta', 'contextual', 't,smoke', 'av,contextual,smoke')
_ERC = ('', 'smoke', 'finetune', 'utterance', 'finetune,utterance,smoke', 'tav',
        'iemocap_features,tav', 'meld', 'meld,sentiment', 'meld_features,ta', 'emorynlp',
        'emorynlp,finetune,smoke')
_FOLDS = ('', 'smoke', 'fold3', 'fold2,smoke', 'fold6')
_SIZES = ('small', 'base,smoke')

# (config as it was named before the rewrite, its variants).
RUNS = {
    **{f'synthetic_{m}': _SYNTHETIC for m in ('tfn', 'lmf', 'early', 'late')},
    **{f'mosi_{m}': _MOSI for m in ('tfn', 'lmf', 'early', 'late', 'bclstm', 'ssm')},
    'mosi_contrastive': _MOSI + ('sigmoid', 'sigmoid,ta,smoke'),
    'mosi_towers': _MOSI + ('finetune', 'probe,smoke'),
    **{f'{c}_{m}': _ERC for c in ('iemocap', 'meld')
       for m in ('contextfree', 'dialoguegcn', 'mmgcn', 'cogmen', 'broadmamba')},
    'ravdess_ssm': _FOLDS,
    'ravdess_transformer': _FOLDS,
    'ravdess_audiomae': _FOLDS + _SIZES,
    'ravdess_audiomae_classifier': _FOLDS + _SIZES + (
        'finetune', 'probe', 'finetune,fullrate', 'fold4,finetune,small,smoke'),
    'ravdess_av_classifier': _FOLDS + (
        'finetune', 'probe', 'audio', 'face', 'whisper', 'whisper,smoke',
        'fold2,audio,finetune', 'face,probe,smoke'),
    'ravdess_contrastive': _FOLDS + ('sigmoid', 'supcon', 'whisper', 'whisper,smoke',
                                     'fold5,sigmoid,smoke'),
    'ravdess_whisper': _FOLDS + ('av', 'finetune', 'speaker', 'av,speaker', 'finetune,smoke',
                                 'av,finetune', 'fold4,av,smoke'),
    'emodb_whisper': ('', 'smoke', 'fold3', 'fold10', 'finetune', 'speaker',
                      'finetune,smoke'),
    **{f'clips_{m}': ('', 'smoke', 'fold2', 'cremad', 'cremad,fold3,smoke', 'videos',
                      'videos,smoke', 'small') for m in ('avmae', 'videomae')},
    'clips_mae_classifier': ('', 'smoke', 'fold2', 'cremad', 'cremad,fold3,smoke', 'small',
                             'video', 'audio,smoke', 'finetune', 'probe',
                             'video,finetune,fold4', 'cremad,audio,probe,smoke'),
}


# Configs merged by the rewrite: the old file -> (today's file, the variant that picks
# what the old file was).
RENAMED = {
    **{f'synthetic_{m}': ('synthetic', m) for m in ('tfn', 'lmf', 'early', 'late')},
    **{f'mosi_{m}': ('mosi', m) for m in ('tfn', 'lmf', 'early', 'late', 'bclstm', 'ssm')},
    **{f'{c}_{m}': ('erc', m if c == 'iemocap' else f'{m},{c}')
       for c in ('iemocap', 'meld')
       for m in ('contextfree', 'dialoguegcn', 'mmgcn', 'cogmen', 'broadmamba')},
    'ravdess_ssm': ('ravdess_speech', 'ssm'),
    'ravdess_transformer': ('ravdess_speech', 'transformer'),
    'clips_avmae': ('clips_mae', 'av'),
    'clips_videomae': ('clips_mae', 'video'),
}


def today(name: str, arg: str) -> tuple[str, str]:
  """The config file and variants that now name the run `configs/<name>.py:<arg>` was."""
  if name not in RENAMED:
    return name, arg
  new, picks = RENAMED[name]
  items = arg.split(',') if arg else []
  for pick in picks.split(','):
    if not any(x == pick or (pick in CORPORA and x in CORPORA) for x in items):
      items.insert(0, pick)
  return new, ','.join(items)


CORPORA = ('iemocap', 'iemocap_features', 'meld', 'meld_features', 'emorynlp')


def resolve(name: str, arg: str) -> dict:
  """get_config(arg) of configs/<name>.py as flat JSON values (tuples become lists)."""
  from affectjax import config as config_lib
  path = os.path.join(REPO, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_config_values_{name}', path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.dirname(path))
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.pop(0)
  config = module.get_config(arg) if arg else module.get_config()
  return json.loads(json.dumps(config_lib.flat(config.to_dict())))


def main() -> None:
  if sys.argv[1:] != ['--write']:
    raise SystemExit('usage: python tests/config_values.py --write')
  out = {f'{name}:{arg}': resolve(name, arg) for name, args in RUNS.items() for arg in args}
  with open(STORED, 'w') as f:
    json.dump(out, f, indent=0, sort_keys=True)
    f.write('\n')
  print(f'{len(out)} runs -> {STORED}')


if __name__ == '__main__':
  main()
