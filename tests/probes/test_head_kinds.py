"""Head-kind scores equal TransformerLens's head detector on the same sequences.

The reference is TransformerLens's own code: its detection patterns
(`get_previous_token_head_detection_pattern` and the others) and its score
(`compute_head_attention_similarity_score`, error measure "mul", as `detect_head` calls
it), on the attention patterns of the model's TransformerBridge, averaged over the
sequences as `detect_head` averages a list.
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import head_detector as tl

from interp.models import load_model
from probes import head_kinds
from probes.head_kinds import HeadKindConfig
from tests.tiny import saved_tiny

DETECTORS = {
    "previous_token": tl.get_previous_token_head_detection_pattern,
    "duplicate_token": tl.get_duplicate_token_head_detection_pattern,
    "induction": tl.get_induction_head_detection_pattern,
}


def _detector_scores(model, ids, detection) -> np.ndarray:
    """[layer, head] scores by TransformerLens's functions, mean over the sequences."""
    _, cache = model.bridge.run_with_cache(ids)
    n_layers, n_heads = model.geometry.n_layers, model.geometry.n_heads
    scores = np.zeros((len(ids), n_layers, n_heads))
    for row, tokens in enumerate(ids):
        pattern = detection(tokens[None])
        for layer in range(n_layers):
            heads = cache[f"blocks.{layer}.attn.hook_pattern"][row]
            for head in range(n_heads):
                scores[row, layer, head] = tl.compute_head_attention_similarity_score(
                    heads[head].float(),
                    pattern,
                    exclude_bos=False,
                    exclude_current_token=False,
                    error_measure="mul",
                )
    return scores.mean(0)


def test_scores_equal_the_transformer_lens_head_detector(tmp_path):
    tiny = load_model(saved_tiny(tmp_path / "tiny"))  # saved: the bridge loads its tokenizer
    config = HeadKindConfig(n_sequences=3, length=12, batch_size=2, seed=3)
    table = head_kinds.run(tiny, config).data
    ids = head_kinds.repeated_tokens(tiny, config)
    assert ids.shape == (3, 1 + 24) and torch.equal(ids[:, 1:13], ids[:, 13:])
    for kind, detection in DETECTORS.items():
        ours = table[kind].to_numpy().reshape(tiny.geometry.n_layers, -1)
        reference = _detector_scores(tiny, ids, detection)
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=0)
        # random weights attend near-uniformly, yet heads differ by far more than the tolerance
        assert ours.std() > 100 * 1e-5 * np.abs(ours).max()

    def two_back(tokens: torch.Tensor) -> torch.Tensor:  # a shifted diagonal: P[i, i - 2]
        n = tokens.shape[-1]
        return torch.diag(torch.ones(n - 2), -2)

    previous = table.previous_token.to_numpy().reshape(tiny.geometry.n_layers, -1)
    assert not np.allclose(previous, _detector_scores(tiny, ids, two_back), atol=1e-3)


def test_detection_patterns_read_the_tokens():
    ids = torch.tensor([[5, 7, 5, 7, 9]])
    previous, duplicate, induction = head_kinds.detection_patterns(ids)[:, 0]
    assert previous.nonzero().tolist() == [[1, 0], [2, 1], [3, 2], [4, 3]]
    assert duplicate.nonzero().tolist() == [[2, 0], [3, 1]]
    assert induction.nonzero().tolist() == [[2, 1], [3, 2]]  # the token after the copy
