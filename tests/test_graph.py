"""Graph construction and message passing of the ERC models (affectjax/layers/graph.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax.layers import attention, graph


def test_window_edges_and_relations_match_a_hand_built_dialogue():
  # One dialogue of 4 real utterances (speakers A B A B) padded to 6, window past 1 / future 2.
  mask = jnp.array([[1, 1, 1, 1, 0, 0]], jnp.float32)
  speaker = jnp.array([[0, 1, 0, 1, 0, 0]], jnp.int32)
  edges = np.asarray(graph.window_edges(mask, past=1, future=2))[0]
  expected = np.zeros((6, 6), bool)
  for i in range(4):  # Target i receives from sources j in [i-1, i+2] among real nodes.
    for j in range(max(0, i - 1), min(3, i + 2) + 1):
      expected[i, j] = True
  np.testing.assert_array_equal(edges, expected)
  rel = np.asarray(graph.relation_types(speaker, 2))[0]
  # Hand-typed relations: (speaker j * 2 + speaker i) * 2 + (j after i).
  assert rel[0, 0] == 0          # A -> A, self
  assert rel[0, 1] == (1 * 2 + 0) * 2 + 1  # B (future) -> A
  assert rel[1, 0] == (0 * 2 + 1) * 2 + 0  # A (past) -> B
  assert rel[3, 2] == (0 * 2 + 1) * 2 + 0  # A (past) -> B
  assert rel[2, 3] == (1 * 2 + 0) * 2 + 1
  assert rel.max() < 8
  # Whole-dialogue windows.
  full = np.asarray(graph.window_edges(mask, -1, -1))[0]
  assert full[:4, :4].all() and not full[4:].any() and not full[:, 4:].any()


def _dense_rgcn_reference(h, weights, rel, bases, comp, root_w, root_b, mean):
  """Per-edge loop: the definition, written out."""
  b, length, _ = h.shape
  w_r = np.einsum('rk,kde->rde', comp, bases)
  out = h @ root_w + root_b
  for bi in range(b):
    for i in range(length):
      counts = {}
      for j in range(length):
        if weights[bi, i, j] != 0:
          counts[rel[bi, i, j]] = counts.get(rel[bi, i, j], 0) + 1
      for j in range(length):
        if weights[bi, i, j] != 0:
          c = counts[rel[bi, i, j]] if mean else 1
          out[bi, i] += weights[bi, i, j] / c * (h[bi, j] @ w_r[rel[bi, i, j]])
  return out


@pytest.mark.parametrize('aggregation,k', [('sum', 3), ('mean', 3), ('sum', 12), ('mean', 12)])
def test_relational_graph_conv_equals_edge_loop(aggregation, k):
  """k < r mixes the bases per edge; k > r (DialogueGCN: 30 bases, 8 relations) forms
  the relation matrices first."""
  rng = np.random.default_rng(0)
  b, length, d, e, r = 2, 5, 3, 4, 8
  h = rng.normal(size=(b, length, d)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.float32)
  speaker = rng.integers(0, 2, size=(b, length)).astype(np.int32)
  edges = graph.window_edges(jnp.asarray(mask), 2, 1)
  weights = np.asarray(edges, np.float32) * rng.uniform(0.1, 1, size=(b, length, length))
  rel = np.asarray(graph.relation_types(jnp.asarray(speaker), 2))
  layer = graph.RelationalGraphConv(e, r, k, aggregation)
  params = layer.init(jax.random.PRNGKey(0), h, weights, rel)['params']
  out = np.asarray(layer.apply({'params': params}, h, weights, rel))
  p = jax.tree.map(np.asarray, nn.meta.unbox(params))
  ref = _dense_rgcn_reference(h, weights, rel, p['bases'], p['comp'], p['root']['kernel'],
                              p['root']['bias'], aggregation == 'mean')
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_masked_softmax_rows_without_edges_are_zero_and_grads_finite():
  scores = jnp.array([[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]])
  edges = jnp.array([[[True, True, False], [False, False, False], [True, True, True]]])
  p = np.asarray(attention.masked_softmax(scores, edges))
  np.testing.assert_allclose(p[0, 0], [np.exp(1) / (np.exp(1) + np.exp(2)),
                                       np.exp(2) / (np.exp(1) + np.exp(2)), 0], rtol=1e-6)
  np.testing.assert_array_equal(p[0, 1], 0)
  g = jax.grad(lambda s: attention.masked_softmax(s, edges)[0, 0, 0])(scores)
  assert np.isfinite(np.asarray(g)).all()


def test_normalized_adjacency_is_symmetric_and_ignores_padding():
  mask = jnp.array([[1, 1, 1, 0]], jnp.float32)
  w = graph.cosine_edge_weights(jax.random.normal(jax.random.PRNGKey(1), (1, 4, 3)),
                                graph.window_edges(mask, -1, -1) & ~jnp.eye(4, dtype=bool))
  a = np.asarray(graph.normalized_adjacency(w, mask))[0]
  np.testing.assert_allclose(a, a.T, rtol=1e-6)
  assert not a[3].any() and not a[:, 3].any()
  assert (np.asarray(w)[0, :3, :3][~np.eye(3, dtype=bool)] > 0).all()
