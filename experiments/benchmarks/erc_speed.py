r"""An IEMOCAP training epoch of DialogueGCN: affectjax against the reference design in PyTorch.

  python -m pip install -e '.[bench]'     # PyTorch: a benchmark-only extra
  AFFECTJAX_DATA_DIR=../shared/data python experiments/benchmarks/erc_speed.py --readme

The PyTorch side mirrors the design of the DialogueGCN reference implementation
(written here from the paper and that code's documented structure, not copied), at
its IEMOCAP sizes: 100-d utterance features, a 2-layer bidirectional LSTM of 100 over
the padded batch, edge attention, a relational graph built per batch in Python (for
every dialogue, every (i, j) pair of the 10/10 window becomes an edge whose weight,
speaker pair and direction are looked up one edge at a time), an R-GCN with 8
relations and 30 bases that gathers one weight matrix per edge (as the PyG 1.x layer
it used does), GraphConv of 100, a 100-unit classifier on [context; graph]; Adam, batch
32 dialogues. affectjax runs `dialog_graph.DialogueGCN` with the same sizes through the
real jitted train step, building the graph on device.

Dialogue lengths and speakers are IEMOCAP's training dialogues when the data directory
is set (random lengths 20-110 otherwise); features are random (the timing does not
depend on their values). Each framework runs in a fresh subprocess, so peak memory
(maximum RSS) is its own; both run side by side in one invocation and the ratio is
printed. With --readme the table replaces the marked section of
experiments/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
D_IN, D_E, GRAPH_H, BASES, WINDOW, CLASSES, SPEAKERS, BATCH = 100, 100, 100, 30, 10, 6, 2, 32
START, END = '<!-- erc-speed:start -->', '<!-- erc-speed:end -->'


def dialogues(seed: int = 0) -> tuple[list[int], list[np.ndarray]]:
  """(lengths, speakers) of IEMOCAP's training dialogues, or random ones like them."""
  data = os.environ.get('AFFECTJAX_DATA_DIR', '')
  path = os.path.join(data, 'iemocap', 'iemocap_conversations.pkl')
  if data and os.path.exists(path):
    from affectjax.data import conversations, erc
    train = conversations.read_iemocap_conversations(path)['train']
    return ([len(d['labels']) for d in train],
            [erc.speaker_ids(d['speakers'], SPEAKERS) for d in train])
  rng = np.random.default_rng(seed)
  lengths = [int(x) for x in rng.integers(20, 111, 108)]
  return lengths, [rng.integers(0, SPEAKERS, n).astype(np.int32) for n in lengths]


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- PyTorch: the reference design -----------------------------------------------------------


def bench_torch(epochs: int) -> dict:
  import torch
  from torch import nn
  torch.manual_seed(0)
  lengths, speakers = dialogues()
  rng = np.random.default_rng(0)
  feats = [torch.tensor(rng.normal(size=(n, D_IN)), dtype=torch.float32) for n in lengths]
  labels = [torch.tensor(rng.integers(0, CLASSES, n)) for n in lengths]
  relation_of = {f'{a}{b}{d}': k for k, (a, b, d) in enumerate(
      (a, b, d) for a in range(SPEAKERS) for b in range(SPEAKERS) for d in range(2))}

  def window_pairs(n):
    return [(i, j) for i in range(n) for j in range(max(0, i - WINDOW), min(n, i + WINDOW + 1))]

  class Model(nn.Module):

    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(D_IN, D_E, num_layers=2, bidirectional=True, dropout=0.5)
      self.att = nn.Linear(2 * D_E, 2 * D_E, bias=False)
      self.bases = nn.Parameter(torch.randn(BASES, 2 * D_E, GRAPH_H) * 0.05)
      self.comp = nn.Parameter(torch.randn(len(relation_of), BASES) * 0.05)
      self.root = nn.Linear(2 * D_E, GRAPH_H)
      self.gc_root = nn.Linear(GRAPH_H, GRAPH_H)
      self.gc_rel = nn.Linear(GRAPH_H, GRAPH_H, bias=False)
      self.fc = nn.Linear(2 * D_E + GRAPH_H, 100)
      self.out = nn.Linear(100, CLASSES)
      self.drop = nn.Dropout(0.5)

    def forward(self, u, qmask, lens):
      ctx, _ = self.lstm(u)  # (T, B, 2*D_E), padded, as the reference.
      scores = torch.softmax(torch.bmm(self.att(ctx).transpose(0, 1),
                                       ctx.transpose(0, 1).transpose(1, 2)), dim=-1)
      nodes, edge_index, edge_norm, edge_type, offset = [], [], [], [], 0
      for b, n in enumerate(lens):  # Graph construction edge by edge, in Python.
        nodes.append(ctx[:n, b])
        for i, j in window_pairs(n):
          edge_index.append([i + offset, j + offset])
          edge_norm.append(scores[b, i, j])
          s_i = int((qmask[i, b] == 1).nonzero()[0][0])
          s_j = int((qmask[j, b] == 1).nonzero()[0][0])
          edge_type.append(relation_of[f'{s_i}{s_j}{0 if i < j else 1}'])
        offset += n
      x = torch.cat(nodes)
      index = torch.tensor(edge_index).t()
      norm = torch.stack(edge_norm)
      etype = torch.tensor(edge_type)
      dst, src = index[0], index[1]
      weight = (self.comp @ self.bases.view(BASES, -1)).view(-1, 2 * D_E, GRAPH_H)
      w = weight.index_select(0, etype)  # One (200, 100) matrix per edge (PyG 1.x RGCNConv).
      msg = torch.bmm(x[src].unsqueeze(1), w).squeeze(1) * norm.unsqueeze(1)
      h = torch.zeros(x.shape[0], GRAPH_H).index_add_(0, dst, msg) + self.root(x)
      agg = torch.zeros_like(h).index_add_(0, dst, h[src])
      h = self.gc_root(h) + self.gc_rel(agg)
      z = self.drop(torch.relu(self.fc(torch.cat([x, h], dim=-1))))
      return torch.log_softmax(self.out(z), dim=-1)

  model = Model()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
  loss_fn = nn.NLLLoss()
  order = np.arange(len(lengths))

  def epoch(seed):
    np.random.default_rng(seed).shuffle(order)
    for start in range(0, len(order), BATCH):
      idx = order[start:start + BATCH]
      lens = [lengths[k] for k in idx]
      t = max(lens)
      u = torch.zeros(t, len(idx), D_IN)
      qmask = torch.zeros(t, len(idx), SPEAKERS)
      for b, k in enumerate(idx):
        u[:lengths[k], b] = feats[k]
        qmask[torch.arange(lengths[k]), b, torch.tensor(speakers[k], dtype=torch.long)] = 1
      y = torch.cat([labels[k] for k in idx])
      opt.zero_grad()
      loss = loss_fn(model(u, qmask, lens), y)
      loss.backward()
      opt.step()
    return float(loss)

  base = _rss_mb()
  start = time.perf_counter()
  epoch(0)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for e in range(epochs):
    loss = epoch(e + 1)
  elapsed = (time.perf_counter() - start) / epochs
  assert np.isfinite(loss)
  return {'epoch_s': elapsed, 'first_epoch_s': first, 'peak_mb': _rss_mb(),
          'growth_mb': _rss_mb() - base, 'dialogues': len(lengths)}


# -- affectjax ----------------------------------------------------------------------------------


def bench_affectjax(epochs: int) -> dict:
  import jax
  from affectjax import config as config_lib
  from affectjax import sharding, train
  from affectjax.data import pipeline
  lengths, speakers = dialogues()
  length = -(-max(lengths) // 8) * 8
  rng = np.random.default_rng(0)
  n = len(lengths)
  arrays = {'text': np.zeros((n, length, D_IN), np.float32),
            'speaker': np.zeros((n, length), np.int32),
            'label': np.zeros((n, length), np.int32),
            'label_mask': np.zeros((n, length), np.float32)}
  for k, m in enumerate(lengths):
    arrays['text'][k, :m] = rng.normal(size=(m, D_IN))
    arrays['speaker'][k, :m] = speakers[k]
    arrays['label'][k, :m] = rng.integers(0, CLASSES, m)
    arrays['label_mask'][k, :m] = 1
  config = config_lib.load(os.path.join(REPO, 'configs', 'iemocap_dialoguegcn.py'), [
      'model.context_hidden=100', 'model.context_layers=2', 'model.graph_hidden=100',
      'model.num_bases=30', 'model.window_past=10', 'model.window_future=10',
      'model.classifier_hidden=100', 'optim.name=adam', 'optim.schedule=constant',
      'optim.learning_rate=1e-4', 'optim.grad_clip=0.0', 'mesh.data=-1', 'mesh.model=1'])
  spec = {k: (v.shape[1:], v.dtype) for k, v in arrays.items()}
  mesh = sharding.make_mesh(config.mesh)
  exp = train.Experiment(config, mesh, spec, ('text',), CLASSES)
  base = _rss_mb()
  start = time.perf_counter()
  step = exp.lower_train_step(BATCH).compile()
  state = exp.init_state(0)
  compile_s = time.perf_counter() - start
  order = np.arange(n)

  def epoch(seed, state):
    np.random.default_rng(seed).shuffle(order)
    for s in range(0, n, BATCH):
      idx = order[s:s + BATCH]
      valid = np.ones(BATCH, np.float32)
      valid[len(idx):] = 0  # The last batch is padded with masked-out dialogues.
      idx = np.pad(idx, (0, BATCH - len(idx)))
      batch = {k: v[idx] for k, v in arrays.items()}
      batch['mask'] = valid
      state, m = step(state, pipeline.to_global(batch, mesh, exp.rules))
    jax.block_until_ready(m)
    return state, float(m['loss'])

  start = time.perf_counter()
  state, _ = epoch(0, state)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for e in range(epochs):
    state, loss = epoch(e + 1, state)
  elapsed = (time.perf_counter() - start) / epochs
  assert np.isfinite(loss)
  return {'epoch_s': elapsed, 'first_epoch_s': first, 'compile_s': compile_s,
          'peak_mb': _rss_mb(), 'growth_mb': _rss_mb() - base, 'dialogues': n,
          'device': jax.devices()[0].platform}


# -- driver -------------------------------------------------------------------------------------


def _measure(framework: str, epochs: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', framework,
         '--epochs', str(epochs)]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not line:
    tail = ' '.join((proc.stderr or proc.stdout).strip().splitlines()[-1:])
    return {'error': tail[:300]}
  return json.loads(line[0][len('RESULT '):])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--worker', choices=('affectjax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--epochs', type=int, default=3, help='timed epochs after one warm-up epoch')
  p.add_argument('--readme', action='store_true')
  args = p.parse_args(argv)
  if args.worker:
    fn = bench_affectjax if args.worker == 'affectjax' else bench_torch
    print('RESULT ' + json.dumps(fn(args.epochs)))
    return 0
  start = time.time()
  res = {fw: _measure(fw, args.epochs) for fw in ('affectjax', 'torch')}
  wall = time.time() - start
  print(json.dumps(res))
  a, t = res['affectjax'], res['torch']
  if 'error' in a or 'error' in t:
    print('failed:', a.get('error'), t.get('error'))
    return 1
  from affectjax import hardware
  import jax
  import torch
  table = '\n'.join([
      '| | epoch s | first epoch s | peak RSS MiB |',
      '|---|---|---|---|',
      f'| affectjax DialogueGCN | {a["epoch_s"]:.2f} | {a["first_epoch_s"]:.2f} '
      f'(+ {a["compile_s"]:.1f} compile) | {a["peak_mb"]:.0f} |',
      f'| PyTorch reference design | {t["epoch_s"]:.2f} | {t["first_epoch_s"]:.2f} | '
      f'{t["peak_mb"]:.0f} |',
  ])
  text = (f'{table}\n\nEpoch speed-up affectjax / reference design: '
          f'**{t["epoch_s"] / a["epoch_s"]:.1f}x**; peak memory {a["peak_mb"]:.0f} MiB vs '
          f'{t["peak_mb"]:.0f} MiB (whole process, maximum RSS).\n\n'
          f'{a["dialogues"]} IEMOCAP training dialogues, batch {BATCH}; mean of {args.epochs} '
          f'timed epochs after a warm-up epoch. Hardware: {hardware.cpu_name()}, '
          f'{os.cpu_count()} cores, device {a["device"]}; jax {jax.__version__}, torch '
          f'{torch.__version__}. Command: `AFFECTJAX_DATA_DIR=../shared/data python '
          f'experiments/benchmarks/erc_speed.py --epochs {args.epochs} --readme` '
          f'(wall {wall / 60:.1f} min).')
  print(text)
  if args.readme:
    path = os.path.join(HERE, 'README.md')
    with open(path) as f:
      readme = f.read()
    block = f'{START}\n{text}\n{END}'
    if START in readme:
      readme = re.sub(re.escape(START) + '.*?' + re.escape(END), lambda _: block, readme,
                      flags=re.S)
    else:
      readme += f'\n## DialogueGCN: an IEMOCAP training epoch\n\n{block}\n'
    with open(path, 'w') as f:
      f.write(readme)
  return 0


if __name__ == '__main__':
  sys.exit(main())
