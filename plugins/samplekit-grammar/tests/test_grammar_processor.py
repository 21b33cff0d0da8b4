"""The constraint processor driven step by step through ChainRun: end-of-text, rows joining and
leaving, impossible tokens, padded vocabularies, and the tokenizers it accepts."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from samplekit import ParameterError
from samplekit.chain import Chain
from samplekit.plugins import get_registry
from samplekit.processor import default_context
from samplekit_grammar import BROKEN, COMPLETE, JsonSchema, Regex, masks, tokenizers

NEG_INF = float("-inf")
RECORD = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 6},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["word", "n"], "additionalProperties": False}


def walk(processor, tokenizer, *, rows=1, steps=60, seed=0, eos=None, vocab=None):
    """Generate ``rows`` rows by argmax over random logits through ``processor`` alone (a
    logits-only ChainRun); ends a row when the processor finishes it. Returns each row's tokens,
    reason, and at each step: (a run end-of-text id allowed, the matcher accepting, the tokenizer's
    own end-of-text masked unless it is a run end-of-text id)."""
    eos = (tokenizer.eot_token,) if eos is None else eos
    vocab = vocab or tokenizer.n_vocab
    run = Chain([processor], logits_only=True).start(rows, seeds=list(range(rows)), tokenizer=tokenizer,
                                                     eos_token_ids=eos)
    gen = torch.Generator().manual_seed(seed)
    alive, tokens, reasons, seen = list(range(rows)), {r: [] for r in range(rows)}, {}, []
    for _ in range(steps):
        if not alive:
            break
        scores = torch.randn(len(alive), vocab, generator=gen) * 4  # (B, V)
        out = run.process(None, scores)  # (B, V)
        assert torch.isfinite(out).any(dim=-1).all(), "a row has every token masked"
        for i, row in enumerate(run.states[0]):
            allowed_eos = any(bool(torch.isfinite(out[i, e])) for e in eos if e < vocab)
            own = tokenizer.eot_token
            seen.append((allowed_eos, row.matcher.is_accepting(), own in eos or bool(torch.isneginf(out[i, own]))))
        chosen = out.argmax(dim=-1)  # (B,)
        run.accept(chosen)
        for i, r in enumerate(alive):
            tokens[r].append(int(chosen[i]))
        done = dict(run.ctx.finished)
        if done:
            reasons.update({alive[i]: why for i, why in done.items()})
            keep = [i for i in range(len(alive)) if i not in done]
            run.keep_rows(torch.tensor(keep, dtype=torch.long))
            alive = [alive[i] for i in keep]
    return tokens, reasons, seen


def text_of(tokenizer, tokens, eos):
    return tokenizer.decode([t for t in tokens if t not in eos])


# -- end-of-text ----------------------------------------------------------------------------------
@pytest.mark.parametrize("eos", [None, (7,), ()], ids=["tokenizer's", "another id", "none"])
def test_end_of_text_is_allowed_exactly_when_the_constraint_accepts(demo_tokenizer, eos):
    """Invariant: at every step, an end-of-text id of the run is allowed iff the row's matcher is
    accepting (can stop here); the tokenizer's <|endoftext|> is allowed only as one of them."""
    p = Regex(pattern="[a-c]{1,3}(x[a-c]{0,2})?")
    for seed in range(6):
        tokens, reasons, seen = walk(p, demo_tokenizer, rows=3, seed=seed, eos=eos)
        run_eos = (demo_tokenizer.eot_token,) if eos is None else eos
        assert all(allowed == accepting for allowed, accepting, _ in seen) if run_eos else \
            not any(allowed for allowed, _, _ in seen)
        assert any(accepting for _, accepting, _ in seen)
        assert all(own_masked for _, _, own_masked in seen)


def test_a_completed_row_ends_with_reason_constraint_and_its_text_validates(demo_tokenizer):
    tokens, reasons, _ = walk(JsonSchema(schema=RECORD), demo_tokenizer, rows=4, steps=200)
    assert set(reasons.values()) == {COMPLETE}
    eos = {demo_tokenizer.eot_token}
    for row in tokens.values():
        jsonschema.validate(json.loads(text_of(demo_tokenizer, row, eos)), RECORD)


# -- rows joining and leaving ---------------------------------------------------------------------------


def test_rows_joining_through_add_rows_match_their_runs_alone(demo_tokenizer):
    """Rows that join a running generation (ChainRun.add_rows) and leave it when their JSON is
    complete (keep_rows) choose exactly the tokens they choose alone."""
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "maxItems": 3}
    chain = Chain([JsonSchema(schema=schema), get_registry().create("multinomial")])
    eos = (demo_tokenizer.eot_token,)
    V = demo_tokenizer.n_vocab

    def logits(row: int, step: int) -> torch.Tensor:
        return torch.randn(V, generator=torch.Generator().manual_seed(1000 * row + step)) * 3  # (V,)

    def simulate(rows: list[int], joins: list[int]) -> dict[int, tuple[list[int], str | None]]:
        run, active, steps_done = None, [], {}
        out = {r: ([], None) for r in rows}
        for step in range(40):
            joining = [r for r, j in zip(rows, joins) if j == step]
            if joining:
                if run is None:
                    run = chain.start(len(joining), seeds=joining, tokenizer=demo_tokenizer, eos_token_ids=eos)
                else:
                    run.add_rows(len(joining), seeds=joining)
                active += joining
                steps_done.update({r: 0 for r in joining})
            if not active:
                continue
            scores = torch.stack([logits(r, steps_done[r]) for r in active])  # (B, V)
            chosen = run.select(None, scores).tolist()
            finished = dict(run.ctx.finished)
            for i, r in enumerate(active):
                out[r][0].append(chosen[i])
                steps_done[r] += 1
                if i in finished or chosen[i] in eos:
                    out[r] = (out[r][0], finished.get(i, "eos"))
            keep = [i for i, r in enumerate(active) if out[r][1] is None]
            if len(keep) < len(active):
                run.keep_rows(torch.tensor(keep, dtype=torch.long))
                active = [active[i] for i in keep]
        return out

    together = simulate([0, 1, 2, 3], [0, 0, 3, 7])
    assert any(reason == COMPLETE for _, reason in together.values())
    for r in range(4):
        alone = simulate([r], [0])[r]
        assert together[r] == alone, f"row {r}: {together[r]} in the batch, {alone} alone"
        tokens, reason = alone
        if reason in (COMPLETE, "eos"):
            text = text_of(demo_tokenizer, tokens, set(eos))
            jsonschema.validate(json.loads(text), schema)


# -- impossible tokens ------------------------------------------------------------------------------------
def test_an_impossible_token_breaks_only_its_row_which_then_allows_only_end_of_text(demo_tokenizer):
    p = JsonSchema(schema=RECORD)
    eot = demo_tokenizer.eot_token
    ctx = default_context(3, tokenizer=demo_tokenizer, eos_token_ids=(eot,))
    ctx.state = p.start(3, ctx)
    brace, letter = demo_tokenizer.encode("{")[0], demo_tokenizer.encode("x")[0]
    p.accept(torch.tensor([brace, letter, 10 ** 6]), ctx)  # row 1: forbidden; row 2: not even a token id
    assert ctx.finished == {1: BROKEN, 2: BROKEN}
    out = p.process(None, torch.zeros(3, demo_tokenizer.n_vocab), ctx)  # (3, V)
    assert torch.isfinite(out[0]).any() and torch.isneginf(out[0, eot])  # row 0 goes on: '"' comes next
    for row in (1, 2):
        assert torch.isfinite(out[row]).nonzero().flatten().tolist() == [eot]


def test_end_of_text_before_the_constraint_can_stop_breaks_the_row(demo_tokenizer):
    p = JsonSchema(schema=RECORD)
    eot = demo_tokenizer.eot_token
    ctx = default_context(1, tokenizer=demo_tokenizer, eos_token_ids=(eot,))
    ctx.state = p.start(1, ctx)
    p.accept(torch.tensor([eot]), ctx)
    assert ctx.finished == {0: BROKEN}


# -- vocabularies -----------------------------------------------------------------------------------------
def test_ids_of_a_padded_model_vocabulary_are_never_allowed(demo_tokenizer):
    """A model vocabulary larger than the tokenizer's: the extra ids stay -inf at every step."""
    p = Regex(pattern="[a-z ]{1,20}")
    V = demo_tokenizer.n_vocab
    tokens, reasons, _ = walk(p, demo_tokenizer, rows=2, vocab=V + 60, steps=30)
    assert all(t < V for row in tokens.values() for t in row)
    ctx = default_context(1, tokenizer=demo_tokenizer, eos_token_ids=(demo_tokenizer.eot_token,))
    ctx.state = p.start(1, ctx)
    out = p.process(None, torch.zeros(1, V + 60), ctx)  # (1, V + 60)
    assert torch.isneginf(out[0, V:]).all() and torch.isfinite(out[0, :V]).any()


def test_the_torch_unpacking_equals_numpy_s(monkeypatch):
    words = torch.randint(-2**31, 2**31 - 1, (3, 5), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    fast = masks.unpack(words, 150, torch.device("cpu"))
    monkeypatch.setattr(masks, "numpy", None)
    slow = masks.unpack(words, 150, torch.device("cpu"))
    assert fast.shape == slow.shape == (3, 150) and torch.equal(fast, slow)
    expected = [[bool((int(w) >> b) & 1) for w in row for b in range(32)][:150] for row in words]
    assert slow.tolist() == expected
    assert masks.unpack(words, 170, torch.device("cpu"))[:, 160:].sum() == 0  # past 32 * W: never allowed


def test_masks_on_llguidance_s_threads_equal_masks_on_the_calling_thread(demo_tokenizer):
    p = JsonSchema(schema=RECORD)
    ctx = default_context(5, tokenizer=demo_tokenizer, eos_token_ids=(demo_tokenizer.eot_token,))
    rows = p.start(5, ctx)
    prefixes = ['{"word": "', '{"word": "ab', '{"word": "x", "n": ', "{", '{"word": "q", "n": 3}']
    for row, text in zip(rows, prefixes):
        assert row.matcher.consume_tokens(demo_tokenizer.encode(text))
    matchers, width = [r.matcher for r in rows], rows[0].compiled.width
    alone = masks.fill(matchers, width)
    assert torch.equal(alone, masks.fill(matchers, width, parallel=True))
    assert len({tuple(r) for r in alone.tolist()}) == 5  # five different states, five different masks
    pacer = masks.Pacer()
    pacer.row_seconds = 1.0  # as if each row took a second: the pacer goes parallel
    assert torch.equal(alone, pacer.fill(matchers, width)) and pacer.row_seconds < 1.0


def test_clearing_bits_clears_only_those_ids():
    words = torch.full((2, 2), -1, dtype=torch.int32)  # every bit set
    masks.clear_bits(words, (0, 31, 33))
    allowed = masks.unpack(words, 64, torch.device("cpu"))
    assert (~allowed).nonzero()[:, 1].tolist() == [0, 31, 33, 0, 31, 33]


# -- tokenizers --------------------------------------------------------------------------------------------
def _complete_json_with(tokenizer, eos):
    tokens, reasons, _ = walk(JsonSchema(schema=RECORD), tokenizer, rows=2, steps=120, eos=eos,
                              vocab=tokenizers.lltokenizer(tokenizer).vocab_size)
    assert set(reasons.values()) == {COMPLETE}, reasons
    for row in tokens.values():
        jsonschema.validate(json.loads(text_of(tokenizer, row, set(eos))), RECORD)


def test_gpt2_tiktoken_encoding(gpt2_encoding):
    _complete_json_with(gpt2_encoding, (gpt2_encoding.eot_token,))


def test_hugging_face_fast_tokenizer(gpt2_hf_tokenizer):
    tok = gpt2_hf_tokenizer
    tok.eot_token, tok.n_vocab = tok.eos_token_id, len(tok)  # what walk() reads
    _complete_json_with(tok, (tok.eos_token_id,))


def test_samplekit_hf_adapter_and_any_tokenizer_with_token_bytes(gpt2_hf_tokenizer):
    adapter_module = pytest.importorskip("samplekit.hf.tokenizer")
    adapter = adapter_module.HFTokenizer(gpt2_hf_tokenizer)
    _complete_json_with(adapter, adapter.eos_token_ids)

    class Bytes:  # no .hf: llguidance reads each token's bytes
        def __init__(self, inner):
            self.inner, self.n_vocab, self.eot_token = inner, inner.n_vocab, inner.eot_token

        def decode_single_token_bytes(self, i):
            return self.inner.decode_single_token_bytes(i)

        def encode(self, text):
            return self.inner.encode(text)

        def decode(self, ids):
            return self.inner.decode(ids)

    _complete_json_with(Bytes(adapter), adapter.eos_token_ids)


def test_the_llguidance_tokenizer_is_built_once_per_tokenizer_and_held_weakly(demo_tokenizer):
    import gc
    import weakref

    assert tokenizers.lltokenizer(demo_tokenizer) is tokenizers.lltokenizer(demo_tokenizer)
    copy = type(demo_tokenizer)(demo_tokenizer.name + "-copy", pat_str=demo_tokenizer._pat_str,
                                mergeable_ranks=demo_tokenizer._mergeable_ranks,
                                special_tokens=demo_tokenizer._special_tokens)
    tokenizers.lltokenizer(copy)
    p = Regex(pattern="a+")
    p.compiled_for(copy)
    gone = weakref.ref(copy)
    del copy
    gc.collect()
    assert gone() is None  # neither cache kept the tokenizer alive


def test_an_encoding_without_end_of_text_gets_a_virtual_one_never_allowed(demo_tokenizer):
    enc = type(demo_tokenizer)("no-eot", pat_str=demo_tokenizer._pat_str,
                               mergeable_ranks=demo_tokenizer._mergeable_ranks, special_tokens={})
    lltok = tokenizers.lltokenizer(enc)
    assert lltok.vocab_size == enc.n_vocab + 1
    p = Regex(pattern="(ab|cd)")
    ctx = default_context(1, tokenizer=enc, eos_token_ids=())
    ctx.state = p.start(1, ctx)
    out = p.process(None, torch.zeros(1, enc.n_vocab), ctx)
    assert torch.isfinite(out).sum() >= 2


def test_a_processor_pickles_and_copies_without_its_caches(demo_tokenizer):
    import copy
    import pickle

    p = JsonSchema(schema=RECORD)
    p.compiled_for(demo_tokenizer)
    for other in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert other.settings == p.settings and other.grammar == p.grammar
        ctx = default_context(1, tokenizer=demo_tokenizer, eos_token_ids=(demo_tokenizer.eot_token,))
        ctx.state = other.start(1, ctx)
        assert torch.isfinite(other.process(None, torch.zeros(1, demo_tokenizer.n_vocab), ctx)).any()


def test_a_generation_without_a_tokenizer_is_refused_naming_the_processor():
    p = Regex(pattern="a", _where="cfg.yaml: chain[0].regex")
    needs = r"cfg.yaml: chain\[0\].regex: a regex constraint needs the generation's tokenizer"
    with pytest.raises(ParameterError, match=needs):
        p.start(1, default_context(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_mask_is_the_cpu_mask_and_stays_on_the_device(demo_tokenizer):
    p = JsonSchema(schema=RECORD)
    eos = (demo_tokenizer.eot_token,)
    scores = torch.randn(3, demo_tokenizer.n_vocab + 64, generator=torch.Generator().manual_seed(0))  # padded
    outs = {}
    for device in ("cpu", "cuda"):
        ctx = default_context(3, tokenizer=demo_tokenizer, eos_token_ids=eos)
        ctx.state = p.start(3, ctx)
        p.accept(torch.tensor(demo_tokenizer.encode("{")[:1] * 3, device=device), ctx)
        out = p.process(None, scores.to(device), ctx)
        assert out.device.type == device and out.dtype == scores.dtype
        outs[device] = out.cpu()
    assert torch.equal(outs["cpu"], outs["cuda"])
