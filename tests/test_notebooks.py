"""The notebooks run top to bottom on a CPU with small settings."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO


@pytest.mark.parametrize('name', ['quickstart.ipynb', 'ablation.ipynb'])
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
  else:
    assert any('image/png' in o.get('data', {}) for o in outputs)
