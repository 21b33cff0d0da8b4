"""samplekit-mirostat: the conformance kit, mu's life cycle, and steering towards tau."""

from __future__ import annotations

import math

import pytest
import torch

from samplekit.chain import Chain
from samplekit.testing import check_processor
from samplekit_mirostat import MirostatV1, MirostatV2

SELECTORS = [MirostatV1, MirostatV2]


def _zipf_scores(batch: int, vocab: int = 1000, s: float = 1.1) -> torch.Tensor:
    rank = torch.arange(1, vocab + 1, dtype=torch.float32)
    return (-s * rank.log()).expand(batch, -1).clone()  # (B, V)


@pytest.mark.parametrize("cls", SELECTORS)
@pytest.mark.parametrize("params", [{}, {"tau": 1.0, "eta": 0.5}, {"tau": 0.0}])
def test_mirostat_conforms(cls, params):
    check_processor(cls, params=params, examples=25)


@pytest.mark.parametrize("name", ["mirostat", "mirostat_v1", "mirostat_v2"])
def test_mirostat_selectors_are_registered_from_their_distribution(name):
    from samplekit.plugins import PluginHost

    entry = PluginHost(autoload=True).build_registry().get(name)
    assert entry.provider.distribution == "samplekit-mirostat" and entry.provider.version == "0.1.0"


@pytest.mark.parametrize("cls", SELECTORS)
def test_mu_starts_at_twice_tau_and_moves_by_eta_times_the_surprise_error(cls):
    chain = Chain([cls(tau=3.0, eta=0.25)])
    run = chain.start(2, seeds=[0, 1])
    assert run.states[0]["mu"].tolist() == [6.0, 6.0]
    scores = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.7, 0.1, 0.1, 0.1]]))
    tokens = run.select(None, scores)
    # Every token survives the truncation here (surprise <= 6 bits; v1's k covers the 4 tokens),
    # so the observed surprise is -log2 of the token's own probability.
    surprise = -torch.log2(scores.exp().gather(-1, tokens[:, None]).squeeze(-1))
    assert torch.allclose(run.states[0]["mu"], 6.0 - 0.25 * (surprise - 3.0))


@pytest.mark.parametrize("cls", SELECTORS)
def test_each_generation_starts_from_a_fresh_mu(cls):
    chain = Chain([cls(tau=2.0, eta=0.5)])
    scores = _zipf_scores(1, 50)
    first = chain.start(1, seeds=[3])
    tokens = [first.select(None, scores).item() for _ in range(10)]
    second = chain.start(1, seeds=[3])
    assert second.states[0]["mu"].item() == 4.0
    assert [second.select(None, scores).item() for _ in range(10)] == tokens


def test_mirostat_v2_with_mu_zero_keeps_only_the_most_likely_tokens():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.5, -2.0]])
    run = Chain([MirostatV2(tau=0.0, eta=0.0)]).start(200, seeds=range(200))
    picked = run.select(None, scores.expand(200, -1))
    assert set(picked.tolist()) == {1, 2}


@pytest.mark.parametrize("cls", SELECTORS)
@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_mirostat_steers_the_average_observed_surprise_to_tau(cls, tau):
    rows, steps, eta = 32, 150, 0.1
    scores = _zipf_scores(rows)
    probs = scores[0].softmax(-1)
    run = Chain([cls(tau=tau, eta=eta)]).start(rows, seeds=range(rows))
    observed, plain = [], []
    for step in range(steps):
        mu = run.states[0]["mu"].clone()
        tokens = run.select(None, scores)
        if step >= 50:  # once mu has settled
            # The surprise mirostat observed (after its truncation), recovered from mu's update.
            observed.append(tau + (mu - run.states[0]["mu"]) / eta)
            plain.append(-torch.log2(probs[tokens]))
    assert abs(torch.cat(observed).mean().item() - tau) < 0.25
    # Truncation made the text less surprising than sampling the distribution itself would.
    entropy = -(probs * probs.log2()).sum().item()
    assert torch.cat(plain).mean().item() < entropy - 1.0


def _llama_cpp_v1_k(probs: list[float], mu: float, m: int) -> int:
    """llama.cpp's k for mirostat v1 (probs sorted in descending order, all positive)."""
    n = len(probs)
    sum_ti_bi = sum_ti_sq = 0.0
    for i in range(min(m - 1, n - 1)):
        t_i = math.log((i + 2) / (i + 1))
        b_i = math.log(probs[i] / probs[i + 1])
        sum_ti_bi += t_i * b_i
        sum_ti_sq += t_i * t_i
    s_hat = sum_ti_bi / sum_ti_sq
    eps = s_hat - 1
    k = ((eps * 2**mu) / (1 - n ** (-eps))) ** (1 / s_hat)
    return max(int(k), 1)


@pytest.mark.parametrize("s, mu, m", [(1.1, 6.0, 100), (1.5, 3.0, 20), (0.8, 8.0, 50), (2.0, 10.0, 100)])
def test_mirostat_v1_keeps_the_k_that_llama_cpp_computes(s, mu, m):
    vocab = 500
    scores = _zipf_scores(1, vocab, s)
    probs = scores[0].softmax(-1).double().tolist()
    expected = min(_llama_cpp_v1_k(probs, mu, m), vocab)
    keep = MirostatV1(m=m)._keep(scores.log_softmax(-1), torch.tensor([mu]))
    assert abs(keep.sum().item() - expected) <= 1  # float32 vs double at the floor
