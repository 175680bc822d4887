"""Graph models for emotion recognition in conversation: DialogueGCN, MMGCN, COGMEN.

Every model reads a batch of padded dialogues (see `affectjax/data/erc.py`):
per-modality utterance features `batch[m]` (B, L, D_m) (or token ids `text_ids`
(B, L, T) when the text encoder is fine-tuned end to end), `speaker` (B, L) and
`label_mask` (B, L), and returns (B, L, classes) logits. Graphs are built on device
from the mask and speakers (`affectjax/layers/graph.py`). Padded utterances have no
edges and are excluded from every recurrence and attention, so they never change the
predictions of real utterances.

Sizes follow the papers' reference implementations where they state them:
DialogueGCN (Ghosal et al. 2019): 2-layer bidirectional LSTM context encoder of 100,
relational graph over a past/future window of 10/10 with 2 * speakers**2 relation
types and 30 bases, R-GCN then GraphConv of 100, classifier on [context; graph].
MMGCN (Hu et al. 2021): one node per utterance per modality, speaker embeddings,
4 GCNII layers. COGMEN (Joshi et al. 2022): transformer context encoder, R-GCN with
mean aggregation, graph transformer convolution.
"""

from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp

from affectjax.layers import graph
from affectjax.layers.attention import TransformerEncoderLayer, masked_softmax
from affectjax.layers.dense import dense
from affectjax.layers.recurrent import BiLSTM
from affectjax.models.conversation import ConversationModel


class DialogueGCN(ConversationModel):
  context_hidden: int = 100
  context_layers: int = 2
  graph_hidden: int = 100
  num_bases: int = 30
  window_past: int = 10
  window_future: int = 10
  classifier_hidden: int = 100
  dropout: float = 0.5

  @nn.compact
  def __call__(self, batch, *, train: bool):
    mask, lengths = self.mask_and_lengths(batch)
    x = jnp.concatenate(self.utterance_features(batch, train=train), axis=-1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    g = BiLSTM(self.context_hidden, self.context_layers, self.dropout, self.dtype,
               name='context')(x, lengths, train=train)
    edges = graph.window_edges(mask, self.window_past, self.window_future)
    # Edge attention: each utterance weighs its window neighbours (softmax over j).
    scores = jnp.einsum('bid,bjd->bij', dense(g.shape[-1], name='edge_attention',
                                              use_bias=False)(g), g)
    alpha = masked_softmax(scores, edges)
    relations = graph.relation_types(batch['speaker'], self.num_speakers)
    h = graph.RelationalGraphConv(self.graph_hidden, 2 * self.num_speakers ** 2,
                                  self.num_bases, 'sum', name='rgcn')(g, alpha, relations)
    h = graph.GraphConv(self.graph_hidden, name='gcn')(h, edges.astype(h.dtype))
    z = jnp.concatenate([g, h], axis=-1)
    z = nn.relu(dense(self.classifier_hidden, name='classifier_hidden')(z))
    z = nn.Dropout(self.dropout, deterministic=not train)(z)
    return dense(self.out_dim, ('hidden', 'classes'), name='classifier')(z)


class MMGCN(ConversationModel):
  """Runs with any subset of modalities: each present modality contributes one node
  per utterance; a single modality gives a one-layer graph of the dialogue."""
  hidden: int = 128
  num_layers: int = 4
  alpha: float = 0.1
  lam: float = 0.5
  dropout: float = 0.4

  @nn.compact
  def __call__(self, batch, *, train: bool):
    mask, _ = self.mask_and_lengths(batch)
    b, length = mask.shape
    feats = self.utterance_features(batch, train=train)
    speaker = nn.Embed(self.num_speakers, self.hidden, name='speaker_embedding')(
        batch['speaker'])
    nodes = []
    for m, x in zip(self.modalities, feats):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      nodes.append(dense(self.hidden, name=f'{m}_in')(x) + speaker)
    k = len(nodes)
    x0 = jnp.concatenate(nodes, axis=1)  # (B, k*L, H): modality-major nodes.
    node_mask = jnp.tile(mask, (1, k))
    # Same modality: every pair of real utterances; across modalities: the same utterance.
    modality = jnp.repeat(jnp.arange(k), length)
    position = jnp.tile(jnp.arange(length), k)
    same_modality = modality[:, None] == modality[None, :]
    same_utterance = (position[:, None] == position[None, :]) & ~same_modality
    real = node_mask > 0
    edges = (same_modality | same_utterance)[None] & real[:, :, None] & real[:, None, :]
    edges &= ~jnp.eye(k * length, dtype=bool)[None]  # Self-loops come with normalisation.
    adjacency = graph.normalized_adjacency(graph.cosine_edge_weights(x0, edges), node_mask)
    h = nn.relu(dense(self.hidden, ('embed', 'hidden'), name='graph_in')(x0))
    h0 = h
    for layer in range(1, self.num_layers + 1):
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      h = nn.relu(graph.GCNIIConv(layer, self.alpha, self.lam, name=f'gcn_{layer}')(
          h, h0, adjacency))
    out = jnp.concatenate([x0, h], axis=-1).reshape(b, k, length, -1)
    out = jnp.concatenate([out[:, i] for i in range(k)], axis=-1)  # (B, L, k*2H)
    out = nn.Dropout(self.dropout, deterministic=not train)(out)
    return dense(self.out_dim, ('hidden', 'classes'), name='classifier')(out)


class COGMEN(ConversationModel):
  hidden: int = 100
  context_layers: int = 2
  context_heads: int = 4
  graph_hidden: int = 100
  graph_heads: int = 4
  num_bases: int = 0
  window_past: int = 10
  window_future: int = 10
  dropout: float = 0.1

  @nn.compact
  def __call__(self, batch, *, train: bool):
    mask, _ = self.mask_and_lengths(batch)
    x = jnp.concatenate(self.utterance_features(batch, train=train), axis=-1)
    x = dense(self.hidden, name='context_in')(x)
    x = x + nn.Embed(self.num_speakers, self.hidden, name='speaker_embedding')(
        batch['speaker'])
    for i in range(self.context_layers):
      x = TransformerEncoderLayer(self.context_heads, 2 * self.hidden, self.dropout,
                                  name=f'context_{i}')(x, mask, train=train)
    edges = graph.window_edges(mask, self.window_past, self.window_future)
    relations = graph.relation_types(batch['speaker'], self.num_speakers)
    h = graph.RelationalGraphConv(self.graph_hidden, 2 * self.num_speakers ** 2,
                                  self.num_bases, 'mean', name='rgcn')(
                                      x, edges.astype(x.dtype), relations)
    h = nn.relu(h)
    h = graph.GraphTransformerConv(self.graph_hidden, self.graph_heads, self.dropout,
                                   name='graph_transformer')(h, edges, train=train)
    z = jnp.concatenate([x, nn.relu(h)], axis=-1)
    z = nn.Dropout(self.dropout, deterministic=not train)(z)
    z = nn.relu(dense(self.hidden, name='classifier_hidden')(z))
    z = nn.Dropout(self.dropout, deterministic=not train)(z)
    return dense(self.out_dim, ('hidden', 'classes'), name='classifier')(z)


class ContextFree(ConversationModel):
  """The no-context baseline: each utterance classified from its own features (one
  hidden layer), blind to its neighbours and speakers. With `text_ids` it fine-tunes
  the encoder on utterance labels alone; `affectjax export-encoder` then writes that
  encoder as a Hugging Face folder for frozen features (`config.data.encoder`)."""
  hidden: int = 100
  dropout: float = 0.1

  @nn.compact
  def __call__(self, batch, *, train: bool):
    x = jnp.concatenate(self.utterance_features(batch, train=train), axis=-1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(dense(self.hidden, name='classifier_hidden')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.out_dim, ('hidden', 'classes'), name='classifier')(x)
