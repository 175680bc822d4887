"""The study scripts write their tables and the prose around them from what they ran
(issue 39): a number typed into a writer's text is a result or a setting someone must
keep in step by hand. This test reads every string of experiments/*/run.py and fails on
a number in it that is neither a citation (a sentence naming its source: "et al.", a
year in parentheses, "published", "literature", or a table named PUBLISHED), a stated
target, a config override, an argument default or a metric's name (R@5, Acc-7,
95% CI)."""

import ast
import glob
import os
import re

from conftest import REPO

NUMBER = re.compile(r'(?<![\w.=/<>@-])(\d+(?:\.\d+)?%?)(?![\w/]|-class|% CI| CI)')
CITED = re.compile(r'et al\.|\((?:19|20)\d\d\)|\b(?:19|20)\d\d\)|[Pp]ublished|literature')
SENTENCE = re.compile(r'(?<=\.)\s+(?=[A-Z(])|\n\n')
SMALL = {'0', '1', '2'}  # Counting words ("one", "both"), not values.


def _strings(tree):
  """(line, text) of every string a script builds, docstrings excepted; an f-string's
  fields read as {}."""
  skip = set()
  for node in ast.walk(tree):  # Published figures kept in a table named for them.
    if isinstance(node, ast.Assign) and any('PUBLISHED' in getattr(t, 'id', '')
                                            for t in node.targets):
      skip.update(id(n) for n in ast.walk(node.value))
  for node in ast.walk(tree):
    body = getattr(node, 'body', None)
    if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
        body[0].value, ast.Constant):
      skip.add(id(body[0].value))
  for node in ast.walk(tree):
    if isinstance(node, ast.JoinedStr):
      skip.update(id(v) for v in node.values)
      yield node.lineno, ''.join(v.value if isinstance(v, ast.Constant) else '{}'
                                 for v in node.values)
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
      yield node.lineno, node.value


def typed_numbers(source: str) -> set[tuple[str, str]]:
  """(number, its sentence) for each number typed into a string of `source` that is not
  cited, a target, an override (`a.b=0.1`) or a list of folds/seeds ('1,2,3')."""
  found = set()
  for _, text in _strings(ast.parse(source)):
    if re.fullmatch(r'[\d,]+', text) or re.fullmatch(r'[\w.]+=[^\s]*', text):
      continue
    for sentence in SENTENCE.split(text):
      if CITED.search(sentence) or 'Target' in sentence:
        continue
      for n in NUMBER.findall(sentence):
        if n not in SMALL:
          found.add((n, ' '.join(sentence.split())))
  return found


def test_the_checker_sees_a_typed_result_and_passes_a_derived_one():
  typed = typed_numbers('text = f"""Pretraining: {clips} clips (960 of them labelled).\n'
                        'Chance 12.5 WAR. DialogueGCN 64.18 (Ghosal et al. 2019)."""')
  assert {n for n, _ in typed} == {'960', '12.5'}
  assert typed_numbers("grid = ['model.dropout=0.1,0.3']\nfolds = '1,2,3,4,5,6'\n"
                       "line = f'{100 * chance:.1f} UAR'") == set()


def test_table_writers_type_no_results():
  typed = []
  for path in sorted(glob.glob(os.path.join(REPO, 'experiments', '*', 'run.py'))):
    with open(path) as f:
      typed += [f'{os.path.relpath(path, REPO)}: {n} in "{sentence[:120]}"'
                for n, sentence in sorted(typed_numbers(f.read()))]
  assert not typed, 'typed numbers in table writers (derive them from the run):\n' + '\n'.join(
      typed)


def test_speech_section_of_the_ssm_study_states_what_its_runs_used(monkeypatch):
  """experiments/ssm's speech text takes its settings from the runs' config and scores."""
  from affectjax import config as config_lib
  from conftest import config_path, load_script
  study = load_script('ssm', 'run.py')
  config = config_lib.load(config_path('ravdess_speech.py:ssm,fold2'), ['train.num_steps=77'])
  facts = {'window_ms': 30.0, 'hop_ms': config.data.hop_ms, 'n_mels': 40, 'top_db': 35.0,
           'num_valid': 3, 'steps': config.train.num_steps, 'batch': 24, 'classes': 8,
           'emodb_clips': 411, 'select': 'uar'}
  monkeypatch.setattr(study, 'ser_study', lambda workdir, folds: ('TABLE', facts))
  out = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'ssm_results_{os.getpid()}.md')
  try:
    assert study.main(['--studies', 'ser', '--folds', '2', '--results', out]) == 0
    text = ' '.join(open(out).read().split())
  finally:
    if os.path.exists(out):
      os.remove(out)
  for part in ('30 ms windows, 20 ms hop, 40 bands', 'silence below 35 dB',
               'validation = 3 actors', '77 steps of 24 clips', 'validation uar',
               '8 classes', '(411 clips)', 'chance 16.7 UAR', 'ddof 1', 'TABLE'):
    assert part in text, part
  # One seed has no spread to print; several print mean +- std with ddof 1.
  assert study._cells({'acc2': (0.5, 0.0, 1)}, ['acc2'], lambda m: 100) == '50.00 |'
  assert study._cells({'acc2': (0.5, 0.1, 3)}, ['acc2'], lambda m: 100) == '50.00 +- 10.00 |'
