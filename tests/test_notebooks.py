"""The notebooks run top to bottom on a CPU with small settings, and the committed ones
carry the outputs of their current cells."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, load_script


NAMES = ['quickstart.ipynb', 'ablation.ipynb', 'predict.ipynb']


@pytest.mark.parametrize('name', NAMES)
def test_notebook_executes(name, monkeypatch):
  monkeypatch.setenv('AFFECTJAX_NOTEBOOK_SMALL', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  path = os.path.join(REPO, 'notebooks', name)
  nb = nbformat.read(path, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': os.path.dirname(path)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  text = ''.join(o.get('text', '') for o in outputs)
  if name == 'quickstart.ipynb':
    assert 'test accuracy' in text
    assert any('image/png' in o.get('data', {}) for o in outputs)
  elif name == 'predict.ipynb':
    assert 'p=' in text and 're-scored test split' in text
    assert any('image/png' in o.get('data', {}) for o in outputs)
  else:
    assert any('image/png' in o.get('data', {}) for o in outputs)


def test_committed_notebooks_hold_the_outputs_of_their_current_cells():
  """`python notebooks/execute.py` after every edit: an edited cell changes the digest."""
  execute = load_script('execute.py', root='notebooks')
  assert list(execute.NOTEBOOKS) == NAMES
  for name in NAMES:
    nb = nbformat.read(os.path.join(REPO, 'notebooks', name), as_version=4)
    meta = nb.metadata.get('affectjax', {})
    assert meta.get('sources_sha256') == execute.sources_digest(nb), (
        f'{name}: cells changed since it was executed; run python notebooks/execute.py')
    assert meta.get('small_settings') is False, name  # Full settings, not the tests' ones.
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert sum(bool(c.get('outputs')) for c in code) >= len(code) - 1, name  # setup is silent
    assert not [o for c in code for o in c.get('outputs', [])
                if o.get('output_type') == 'error'], name
    nb.cells[-1].source += '\n'
    assert execute.sources_digest(nb) != meta['sources_sha256']


def test_colab_badge_and_install_url_come_from_pyproject():
  execute = load_script('execute.py', root='notebooks')
  path = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')
  url = 'https://github.com/someone/affectjax'
  nb = execute.with_colab(nbformat.read(path, as_version=4), 'quickstart.ipynb', url)
  assert nb.cells[0].source.split('\n')[2] == (
      f'{execute.BADGE}(https://colab.research.google.com/github/someone/affectjax/blob/main/'
      'notebooks/quickstart.ipynb)')
  assert f"os.environ.get('AFFECTJAX_REPO', '{url}')" in nb.cells[1].source
  assert 'No public repository URL' not in nb.cells[1].source
  again = execute.with_colab(nbformat.reads(nbformat.writes(nb), as_version=4),
                             'quickstart.ipynb', url)
  assert execute.sources_digest(again) == execute.sources_digest(nb)  # Idempotent.
  plain = nbformat.read(path, as_version=4)
  assert execute.sources_digest(execute.with_colab(plain, 'quickstart.ipynb', '')) == (
      execute.sources_digest(nbformat.read(path, as_version=4)))
  with pytest.raises(ValueError, match=r'\[project.urls\] Repository: .*github'):
    execute.with_colab(plain, 'quickstart.ipynb', 'https://example.org/affectjax')
  # The committed notebooks carry the badge exactly when pyproject publishes a URL.
  published = execute.repository_url()
  for name in NAMES:
    nb = nbformat.read(os.path.join(REPO, 'notebooks', name), as_version=4)
    assert (execute.BADGE in nb.cells[0].source) == bool(published), name
