"""The layers of docs/ARCHITECTURE.md, checked on the code's own imports."""

import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, 'affectjax')

# Module name (or package prefix ending in '.') -> layer; the longest match wins. The same
# table as docs/ARCHITECTURE.md.
LAYERS = {
    'affectjax': 7, 'affectjax.main': 7, 'affectjax.__main__': 7,
    'affectjax.inference': 6, 'affectjax.studies': 6, 'affectjax.sweep': 6,
    'affectjax.compile': 6, 'affectjax.robustness': 6,
    'affectjax.train': 5, 'affectjax.experiment': 5, 'affectjax.runcard': 5,
    'affectjax.data': 4, 'affectjax.data.': 4, 'affectjax.tasks': 4,
    'affectjax.models': 3, 'affectjax.models.': 3, 'affectjax.transfer': 3,
    'affectjax.encoders': 2, 'affectjax.encoders.': 2,
    'affectjax.layers': 1, 'affectjax.layers.': 1, 'affectjax.config': 1,
    'affectjax.metrics': 1, 'affectjax.losses': 1, 'affectjax.optim': 1,
    'affectjax.checkpoint': 1, 'affectjax.plots': 1, 'affectjax.data.audio': 1,
    'affectjax.data.base': 1, 'affectjax.data.safe_pickle': 1, 'affectjax.data.video': 1,
    'affectjax.errors': 0, 'affectjax.faults': 0, 'affectjax.progress': 0,
    'affectjax.version': 0, 'affectjax.hardware': 0, 'affectjax.workdir': 0,
    'affectjax.preemption': 0, 'affectjax.distributed': 0, 'affectjax.sharding': 0,
}


def _modules() -> dict[str, str]:
  out = {}
  for folder, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        module = os.path.relpath(path[:-3], REPO).replace(os.sep, '.')
        out[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
  return out


def _imports(modules: dict[str, str]) -> dict[str, set[str]]:
  """Module -> the affectjax modules it imports anywhere in its file (function-level
  imports too); `from affectjax import x` is an import of module affectjax.x when that is
  a module, of the package otherwise."""
  def resolve(name):
    while name and name not in modules:
      name = name.rpartition('.')[0]
    return name

  edges = {}
  for module, path in modules.items():
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = set()
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        found.update(resolve(a.name) for a in node.names if a.name.startswith('affectjax'))
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = package.split('.')
          base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        if base.startswith('affectjax'):
          found.update(resolve(f'{base}.{a.name}') for a in node.names)
    edges[module] = {m for m in found if m and m != module}
  return edges


def _layer(module: str) -> int:
  best = max((k for k in LAYERS if module == k or (k.endswith('.') and module.startswith(k))),
             key=len, default=None)
  assert best is not None, f'{module}: in no layer of docs/ARCHITECTURE.md; add it there'
  return LAYERS[best]


def _circles(edges) -> list[list[str]]:
  """Strongly connected groups of more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        out.append(sorted(group))
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
  edges = _imports(_modules())
  upward = sorted(f'{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})'
                  for m, targets in edges.items() for t in targets if _layer(t) > _layer(m))
  assert not upward, '\n'.join(upward)


def test_no_import_circles():
  assert _circles(_imports(_modules())) == []


def test_the_checks_see_a_violation():
  """The checker itself: an upward import and a circle in a made-up graph are found."""
  edges = {'affectjax.models.x': {'affectjax.train'}, 'affectjax.train': {'affectjax.runcard'},
           'affectjax.runcard': {'affectjax.train'}}
  assert _circles(edges) == [['affectjax.runcard', 'affectjax.train']]
  assert _layer('affectjax.models.x') < _layer('affectjax.train')
  assert _layer('affectjax.data.audio') == 1 and _layer('affectjax.data.erc') == 4


def test_the_document_states_the_same_table():
  with open(os.path.join(REPO, 'docs', 'ARCHITECTURE.md')) as f:
    text = f.read()
  for key in LAYERS:
    name = key.rstrip('.').removeprefix('affectjax.').replace('.', '/')
    if key == 'affectjax':
      continue
    assert f'`{name}' in text, f'{key} is not in docs/ARCHITECTURE.md'
