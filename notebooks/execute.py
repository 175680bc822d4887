"""Runs the notebooks top to bottom and saves them with their outputs, so that a reader
sees real results without running anything.

  AFFECTJAX_DATA_DIR=../shared/data JAX_PLATFORMS=cpu python notebooks/execute.py
  python notebooks/execute.py --small quickstart.ipynb   # the tests' small settings

Each notebook is written atomically, only when every cell ran without an error; its
metadata records the command, date, machine and a digest of the cells' sources
(tests/test_notebooks.py checks that the committed outputs belong to the current cells).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BADGE = '[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
_INSTALL_DEFAULT = re.compile(r"os\.environ\.get\('AFFECTJAX_REPO', '[^']*'\)")
_UNPUBLISHED = re.compile(r'# No public repository URL is published yet: .*?the configs ship '
                          r'inside it\.', re.S)
_PUBLISHED = ("# The project's repository (pyproject.toml); AFFECTJAX_REPO may name a fork "
              'or a path in\n    # your Drive instead. The configs ship inside the package.')
NOTEBOOKS = ('quickstart.ipynb', 'ablation.ipynb', 'predict.ipynb')


def sources_digest(nb) -> str:
  """SHA-256 of every cell's type and source, in order: what the outputs were made from."""
  import hashlib
  import json
  cells = [[c.cell_type, c.source] for c in nb.cells]
  return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def repository_url(pyproject: str = os.path.join(os.path.dirname(HERE), 'pyproject.toml')) -> str:
  """pyproject.toml's `[project.urls] Repository`, or '' while none is published."""
  import tomllib
  with open(pyproject, 'rb') as f:
    return tomllib.load(f).get('project', {}).get('urls', {}).get('Repository', '')


def with_colab(nb, name: str, url: str):
  """With the project's GitHub URL: a Colab badge under the title and that URL as the
  install cell's default (AFFECTJAX_REPO still overrides it). Without one, unchanged."""
  if not url:
    return nb
  m = re.fullmatch(r'https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?', url)
  if not m:
    raise ValueError(f'pyproject.toml [project.urls] Repository: {url!r} is not '
                     'https://github.com/OWNER/NAME (Colab opens notebooks from GitHub)')
  link = f'https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/main/notebooks/{name}'
  title, *rest = [line for line in nb.cells[0].source.split('\n') if not line.startswith(BADGE)]
  while rest and not rest[0].strip():
    rest.pop(0)
  nb.cells[0].source = '\n'.join([title, '', f'{BADGE}({link})', '', *rest])
  for cell in nb.cells:
    if cell.cell_type == 'code':
      cell.source = _UNPUBLISHED.sub(_PUBLISHED, _INSTALL_DEFAULT.sub(
          f"os.environ.get('AFFECTJAX_REPO', {url!r})", cell.source))
  return nb


def execute(name: str, small: bool) -> None:
  import nbformat
  from nbclient import NotebookClient
  from affectjax import hardware, workdir
  path = os.path.join(HERE, name)
  nb = with_colab(nbformat.read(path, as_version=4), name, repository_url())
  if small:
    os.environ['AFFECTJAX_NOTEBOOK_SMALL'] = '1'
  else:
    os.environ.pop('AFFECTJAX_NOTEBOOK_SMALL', None)
  NotebookClient(nb, timeout=3600, kernel_name='python3',
                 resources={'metadata': {'path': HERE}}).execute()
  nb.metadata['affectjax'] = {
      'executed': datetime.datetime.now().isoformat(timespec='seconds'),
      'command': 'python notebooks/execute.py' + (' --small' if small else ''),
      'small_settings': small, 'hardware': hardware.describe(),
      'sources_sha256': sources_digest(nb)}
  workdir.write_atomic(path, 'the executed notebook', lambda f: nbformat.write(nb, f))
  print(f'{name}: executed and saved with outputs')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('names', nargs='*', default=list(NOTEBOOKS))
  p.add_argument('--small', action='store_true', help='AFFECTJAX_NOTEBOOK_SMALL=1')
  args = p.parse_args(argv)
  for name in args.names:
    execute(name, args.small)
  return 0


if __name__ == '__main__':
  sys.exit(main())
