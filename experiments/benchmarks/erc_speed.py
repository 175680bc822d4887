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
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
D_IN, D_E, GRAPH_H, BASES, WINDOW, CLASSES, SPEAKERS, BATCH = 100, 100, 100, 30, 10, 6, 2, 32
# MMGCN: text / audio / visual feature sizes of the IEMOCAP features pickle, graph width, depth.
MODALITY_DIMS, MMGCN_H, MMGCN_LAYERS = (100, 100, 512), 100, 4
MODELS = {'dialoguegcn': 'DialogueGCN', 'mmgcn': 'MMGCN (t+a+v)'}
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


def bench_torch(model_name: str, epochs: int) -> dict:
  import torch
  from torch import nn
  torch.manual_seed(0)
  lengths, speakers = dialogues()
  rng = np.random.default_rng(0)
  dims = MODALITY_DIMS if model_name == 'mmgcn' else (D_IN,)
  feats = [[torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32) for d in dims]
           for n in lengths]
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

  class MMGCNModel(nn.Module):
    """The MMGCN reference design: per-modality projections plus speaker embeddings, one
    dense block-diagonal adjacency over the whole batch filled dialogue by dialogue in
    Python (intra-modal similarity blocks, cross-modal edges utterance by utterance),
    then GCNII layers over it."""

    def __init__(self):
      super().__init__()
      self.proj = nn.ModuleList([nn.Linear(d, MMGCN_H) for d in MODALITY_DIMS])
      self.speaker = nn.Embedding(SPEAKERS, MMGCN_H)
      self.graph_in = nn.Linear(MMGCN_H, MMGCN_H)
      self.layers = nn.ModuleList([nn.Linear(MMGCN_H, MMGCN_H, bias=False)
                                   for _ in range(MMGCN_LAYERS)])
      self.out = nn.Linear(len(MODALITY_DIMS) * 2 * MMGCN_H, CLASSES)
      self.drop = nn.Dropout(0.4)

    def forward(self, u, qmask, lens):
      spk = self.speaker(qmask.argmax(-1))  # (T, B, H)
      per_mod = [self.drop(p(x)) + spk for p, x in zip(self.proj, u)]
      blocks = []
      for b, n in enumerate(lens):  # Node order inside a dialogue: modality-major.
        blocks.append(torch.cat([x[:n, b] for x in per_mod]))
      x = torch.cat(blocks)
      adj = torch.zeros(x.shape[0], x.shape[0])
      k, offset = len(per_mod), 0
      for b, n in enumerate(lens):
        sub = x[offset:offset + k * n].detach()
        unit = sub / sub.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        for m in range(k):  # Intra-modal: all pairs of the dialogue.
          blk = unit[m * n:(m + 1) * n]
          sim = 1 - torch.acos((blk @ blk.t()).clamp(-1 + 1e-6, 1 - 1e-6)) / np.pi
          adj[offset + m * n:offset + (m + 1) * n, offset + m * n:offset + (m + 1) * n] = sim
        for i in range(n):  # Cross-modal: the same utterance, edge by edge.
          for m1 in range(k):
            for m2 in range(k):
              if m1 != m2:
                c = torch.dot(unit[m1 * n + i], unit[m2 * n + i]).clamp(-1 + 1e-6, 1 - 1e-6)
                adj[offset + m1 * n + i, offset + m2 * n + i] = 1 - torch.acos(c) / np.pi
        offset += k * n
      deg = adj.sum(1)
      inv = deg.clamp(min=1e-12).pow(-0.5)
      adj = inv[:, None] * adj * inv[None, :]
      h = h0 = torch.relu(self.graph_in(x))
      for layer, lin in enumerate(self.layers, start=1):
        beta = float(np.log(0.5 / layer + 1))
        support = 0.9 * (adj @ self.drop(h)) + 0.1 * h0
        h = torch.relu((1 - beta) * support + beta * lin(support))
      z = torch.cat([x, h], dim=-1)
      outs, offset = [], 0
      for n in lens:
        part = z[offset:offset + k * n].view(k, n, -1)
        outs.append(torch.cat(list(part), dim=-1))
        offset += k * n
      return torch.log_softmax(self.out(self.drop(torch.cat(outs))), dim=-1)

  model = Model() if model_name == 'dialoguegcn' else MMGCNModel()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
  loss_fn = nn.NLLLoss()
  order = np.arange(len(lengths))

  def epoch(seed):
    np.random.default_rng(seed).shuffle(order)
    for start in range(0, len(order), BATCH):
      idx = order[start:start + BATCH]
      lens = [lengths[k] for k in idx]
      t = max(lens)
      u = [torch.zeros(t, len(idx), d) for d in dims]
      qmask = torch.zeros(t, len(idx), SPEAKERS)
      for b, k in enumerate(idx):
        for m in range(len(dims)):
          u[m][:lengths[k], b] = feats[k][m]
        qmask[torch.arange(lengths[k]), b, torch.tensor(speakers[k], dtype=torch.long)] = 1
      if model_name == 'dialoguegcn':
        u = u[0]
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


def bench_affectjax(model_name: str, epochs: int) -> dict:
  import jax
  from affectjax import config as config_lib
  from affectjax import sharding
  from affectjax import experiment
  from affectjax.data import pipeline
  lengths, speakers = dialogues()
  length = -(-max(lengths) // 8) * 8
  rng = np.random.default_rng(0)
  n = len(lengths)
  names = ('text', 'audio', 'vision') if model_name == 'mmgcn' else ('text',)
  dims = MODALITY_DIMS if model_name == 'mmgcn' else (D_IN,)
  arrays = {m: np.zeros((n, length, d), np.float32) for m, d in zip(names, dims)}
  arrays.update({'speaker': np.zeros((n, length), np.int32),
            'label': np.zeros((n, length), np.int32),
            'label_mask': np.zeros((n, length), np.float32)})
  for k, m in enumerate(lengths):
    for name, d in zip(names, dims):
      arrays[name][k, :m] = rng.normal(size=(m, d))
    arrays['speaker'][k, :m] = speakers[k]
    arrays['label'][k, :m] = rng.integers(0, CLASSES, m)
    arrays['label_mask'][k, :m] = 1
  common = ['optim.name=adam', 'optim.schedule=constant', 'optim.learning_rate=1e-4',
            'optim.grad_clip=0.0', 'mesh.data=-1', 'mesh.model=1']
  if model_name == 'dialoguegcn':
    config = config_lib.load(os.path.join(REPO, 'configs', 'erc.py:dialoguegcn'), [
        'model.context_hidden=100', 'model.context_layers=2', 'model.graph_hidden=100',
        'model.num_bases=30', 'model.window_past=10', 'model.window_future=10',
        'model.classifier_hidden=100', *common])
  else:
    config = config_lib.load(os.path.join(REPO, 'configs', 'erc.py:mmgcn'), [
        f'model.hidden={MMGCN_H}', f'model.num_layers={MMGCN_LAYERS}', *common])
  spec = {k: (v.shape[1:], v.dtype) for k, v in arrays.items()}
  mesh = sharding.make_mesh(config.mesh)
  exp = experiment.Experiment(config, mesh, spec, names, CLASSES)
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


def _measure(framework: str, model: str, epochs: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', framework, '--model', model,
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
  p.add_argument('--model', choices=tuple(MODELS), default='dialoguegcn', help=argparse.SUPPRESS)
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--readme', action='store_true')
  args = p.parse_args(argv)
  if args.worker:
    fn = bench_affectjax if args.worker == 'affectjax' else bench_torch
    print('RESULT ' + json.dumps(fn(args.model, args.epochs)))
    return 0
  start = time.time()
  models = args.models.split(',')
  res = {m: {fw: _measure(fw, m, args.epochs) for fw in ('affectjax', 'torch')} for m in models}
  wall = time.time() - start
  print(json.dumps(res))
  from affectjax import hardware
  import jax
  import torch
  rows = ['| model | affectjax epoch s | affectjax first epoch s (compile s) | affectjax peak '
          'RSS MiB | reference design epoch s | reference peak RSS MiB | epoch speed-up |',
          '|---|---|---|---|---|---|---|']
  for m in models:
    a, t = res[m]['affectjax'], res[m]['torch']
    if 'error' in a or 'error' in t:
      rows.append(f'| {MODELS[m]} | failed: {a.get("error", "")} {t.get("error", "")} |')
      continue
    rows.append(f'| {MODELS[m]} | {a["epoch_s"]:.2f} | {a["first_epoch_s"]:.2f} '
                f'({a["compile_s"]:.1f}) | {a["peak_mb"]:.0f} | {t["epoch_s"]:.2f} | '
                f'{t["peak_mb"]:.0f} | **{t["epoch_s"] / a["epoch_s"]:.1f}x** |')
  any_ok = next((r['affectjax'] for r in res.values() if 'error' not in r['affectjax']), {})
  text = ('\n'.join(rows) + '\n\n' +
          f'{any_ok.get("dialogues", "?")} IEMOCAP training dialogues, batch {BATCH}; mean of '
          f'{args.epochs} timed epochs after a warm-up epoch. Peak memory is the whole '
          f'process\'s maximum RSS (Python, the framework and the data included). Hardware: '
          f'{hardware.cpu_name()}, {os.cpu_count()} cores, device '
          f'{any_ok.get("device", "?")}; jax {jax.__version__}, torch {torch.__version__}. '
          f'Command: `AFFECTJAX_DATA_DIR=../shared/data python '
          f'experiments/benchmarks/erc_speed.py --epochs {args.epochs} --readme` '
          f'(wall {wall / 60:.1f} min).')
  print(text)
  if args.readme:
    from affectjax import workdir
    workdir.replace_section(os.path.join(HERE, 'README.md'), f'{START}\n{text}\n{END}',
                            START, END, 'Graph ERC models: an IEMOCAP training epoch')
  return 0


if __name__ == '__main__':
  sys.exit(main())
