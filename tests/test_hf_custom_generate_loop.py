"""``samplekit.hf.custom_generate`` decodes through samplekit's one loop (``Decoding``) while
``generate``'s own logits processors and stopping criteria see ``generate``'s full batch."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

import torch  # noqa: E402

import samplekit  # noqa: E402
from samplekit import Chain  # noqa: E402
from samplekit.hf import custom_generate, load_model  # noqa: E402
from tests.hf_fixtures import model_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB, NEW, EOS, PAD = 320, 8, 9, 1  # the model never picks 9 here unforced
PROMPTS = [[5, 17, 260, 3, 99, 42, 7], [11, 12], [300, 1, 2, 3]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(model_folder(tmp_path_factory.mktemp("hf-custom-generate-loop"), "gpt2", vocab=VOCAB, seed=3))


def left_padded(prompts):
    P = max(map(len, prompts))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


class EndsRowsInTurn(transformers.LogitsProcessor):
    """Forces end-of-text as row i's new token i + 1, and records what it is shown at each step:
    (rows of input_ids, rows of scores, each row's last id)."""

    def __init__(self, width: int):
        self.width, self.seen = width, []

    def __call__(self, input_ids, scores):
        new = input_ids.shape[1] - self.width  # new tokens so far
        self.seen.append((input_ids.shape[0], scores.shape[0], input_ids[:, -1].tolist()))
        scores = scores.clone()
        for i in range(scores.shape[0]):
            if new == i + 1:
                scores[i] = float("-inf")
                scores[i, EOS] = 0.0
        return scores


def generate(model, fn=None, processor=None):
    ids, mask = left_padded(PROMPTS)
    options = {} if fn is None else {"custom_generate": fn}
    if processor is not None:
        options["logits_processor"] = transformers.LogitsProcessorList([processor])
    out = model.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, pad_token_id=PAD,
                               eos_token_id=EOS, **options)
    return out[:, ids.shape[1]:].tolist()


def test_rows_ending_at_different_steps_match_generates_loop_and_its_processors_see_the_full_batch(model):
    """generate's processor ends the rows one after another: the custom loop gives generate's own
    greedy sequences (each ended row filled with the pad id), and the processor is always shown
    all 3 rows, the ended ones holding the pad id, as in generate's loop."""
    width = max(map(len, PROMPTS))
    theirs, ours = EndsRowsInTurn(width), EndsRowsInTurn(width)
    expected = generate(model, processor=theirs)
    got = generate(model, custom_generate(Chain.from_names("greedy")), processor=ours)
    assert got == expected
    for i, row in enumerate(got):
        assert row[i + 1] == EOS and set(row[i + 2:]) <= {PAD}, row
    assert ours.seen == theirs.seen
    assert all(rows == scores == len(PROMPTS) for rows, scores, _ in ours.seen)
    assert ours.seen[3][2][0] == PAD  # row 0 ended (end-of-text, then the pad id), still shown


def test_the_chains_context_processor_is_honoured_as_in_samplekits_generate(model):
    """A context processor crops what the model sees in custom_generate exactly as in
    samplekit.generate: both run the same loop."""
    chain = Chain.from_names(("context_window", {"context_length": 4}), "greedy")
    ours = [r.tokens for r in samplekit.generate(model, PROMPTS, chain=chain, max_new_tokens=NEW, stop_on_eos=False)]
    ids, mask = left_padded(PROMPTS)
    out = model.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                               pad_token_id=PAD, eos_token_id=None, custom_generate=custom_generate(chain))
    assert out[:, ids.shape[1]:].tolist() == ours
    uncropped = [r.tokens for r in samplekit.generate(model, PROMPTS, chain=Chain.from_names("greedy"),
                                                      max_new_tokens=NEW, stop_on_eos=False)]
    assert ours != uncropped  # the window changed the tokens: the test can tell
