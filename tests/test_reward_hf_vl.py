"""The Hugging Face vision-language adapter on a tiny random CLIP the test makes (nothing is
downloaded)."""

import numpy as np
import pytest

from rewards.base import RewardConfig, make_reward
from tests.toy_reach import reach_episodes

WORDS = ["reach", "the", "goal", "push", "puck", "to"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-clip"
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 16, "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 16, "eos_token_id": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8)
    transformers.CLIPModel(config).save_pretrained(path)
    path.joinpath("vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]) + "\n")
    transformers.BertTokenizerFast(str(path / "vocab.txt")).save_pretrained(path)
    return path


def test_loads_a_local_checkpoint_and_scores_progress(tiny_clip):
    reward = make_reward(RewardConfig("hf_vl", {"path": str(tiny_clip), "key": "pixels"}))
    assert reward.name == "hf_vl" and reward.version == "tiny-clip"
    chunk = reach_episodes(0, 1, camera=True)[0][0]
    r = reward.score(chunk)
    assert r.shape == (len(chunk.action),) and r.dtype == np.float32
    assert np.all(np.isfinite(r)) and np.any(r != 0)
    assert not reward.failed(chunk)
    progress = reward.progress(chunk)  # similarities are cosines
    assert progress.shape == (len(chunk.action) + 1,) and np.all(np.abs(progress) <= 1 + 1e-5)
    np.testing.assert_allclose(np.diff(progress) * 10.0, r, rtol=1e-4, atol=1e-6)


def test_instructions_change_the_score_and_are_cached(tiny_clip):
    reward = make_reward(RewardConfig("hf_vl", {"path": str(tiny_clip)}), guard=False)
    a, b = reward.text_embedding("reach the goal"), reward.text_embedding("push the puck")
    assert not np.allclose(a.numpy(), b.numpy())
    assert reward.text_embedding("reach the goal") is a


def test_a_missing_checkpoint_is_an_error_not_a_download(tmp_path):
    with pytest.raises(OSError):
        make_reward(RewardConfig("hf_vl", {"path": str(tmp_path / "absent")}))
