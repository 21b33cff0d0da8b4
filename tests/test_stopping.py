"""Stop conditions: stop strings across token boundaries (never printed), held-back text,
UTF-8 split over tokens, end-of-text ids, the deadline."""

from __future__ import annotations

import pytest
import tiktoken
import torch
from torch import nn

from samplekit import stopping
from samplekit.chain import Chain
from samplekit.engine import generate, generate_stream
from samplekit.stopping import Deadline, StopStrings, TextStream, resolve_eos_ids

PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"he", b"ll", b"lo", b" w", b"or", b"ld", b"hel", b"\n\n"]
EOT = 256 + len(MERGES)
GREEDY = Chain.from_names("greedy")


def tiny_encoding() -> tiktoken.Encoding:
    ranks = {bytes([i]): i for i in range(256)}
    ranks.update({m: 256 + i for i, m in enumerate(MERGES)})
    return tiktoken.Encoding(name="tiny", pat_str=PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT})


ENC = tiny_encoding()


class ScriptModel(nn.Module):
    """After the one-token prompt ``m``, emits ``scripts[m]`` in order, then repeats its last token."""

    def __init__(self, scripts: dict[int, list[int]]):
        super().__init__()
        self.scripts = scripts

    def forward(self, ids):
        B, T = ids.shape
        out = torch.full((B, T, EOT + 1), -10.0)
        for b in range(B):
            script = self.scripts[int(ids[b, 0])]
            for t in range(T):
                out[b, t, script[min(t, len(script) - 1)]] = 10.0
        return out


def run(texts_or_tokens: list, **kwargs):
    """Generate from scripted rows (str: its encoding; list: those ids); returns (results, events)."""
    scripts = {i: ENC.encode(s, allowed_special="all") if isinstance(s, str) else s
               for i, s in enumerate(texts_or_tokens)}
    model = ScriptModel(scripts)
    prompts = [[i] for i in scripts]
    kwargs = {"chain": GREEDY, "tokenizer": ENC, "max_new_tokens": 12, **kwargs}
    results = generate(model, prompts, **kwargs)
    events = list(generate_stream(model, prompts, **kwargs))
    return results, events


def row_text(events, row: int) -> list[str]:
    return [e.text for e in events if e.row == row]


# -- stop strings in generation --------------------------------------------------------------------------

def test_a_stop_string_spanning_tokens_ends_the_row_and_is_never_printed():
    assert [ENC.decode([t]) for t in ENC.encode("hello world")] == ["he", "ll", "o", " w", "or", "ld"]
    results, events = run(["hello world and more"], stop=["o wo"])
    (result,) = results
    assert result.finish_reason == "stop" and result.text == "hell"
    pieces = row_text(events, 0)
    assert pieces == ["he", "ll", "", "", ""]  # "o", "o w" were held: they might begin the stop string
    # "he", "ll" begin before the stop string (at 4); "o", " w" and "or" begin inside it: removed.
    assert result.tokens == ENC.encode("hell")
    assert ENC.decode(result.tokens).startswith(result.text)
    assert events[-1].finished == "stop"


def test_a_token_straddling_the_start_of_a_stop_string_is_kept_in_tokens_but_cut_from_text():
    (result,), events = run(["hello world"], stop=["lo w"])
    assert result.text == "hel" and "".join(row_text(events, 0)) == "hel"
    assert result.tokens == ENC.encode("hell")  # "ll" begins before the stop string (at 3)


def test_held_back_text_is_released_once_it_cannot_begin_a_stop_string():
    results, events = run(["hello world"], stop=["lox"])
    pieces = row_text(events, 0)
    assert pieces[:3] == ["he", "l", ""]  # "l", then "lo" might begin "lox"
    assert pieces[3] == "lo w"  # ... until " w" follows
    assert "".join(pieces) == results[0].text and results[0].text.startswith("hello world")
    assert results[0].finish_reason == "length"


def test_the_earliest_of_several_stop_strings_wins():
    (result,), _ = run(["hello world"], stop=["world", "llo"])
    assert result.text == "he" and result.finish_reason == "stop"


def test_a_stop_string_at_a_token_boundary_removes_exactly_its_tokens():
    (result,), events = run(["hi\n\nbye"], stop=["\n\n"])
    assert result.text == "hi" and result.tokens == ENC.encode("hi")
    assert "".join(row_text(events, 0)) == "hi"


def test_rows_stop_independently_and_streams_reassemble_into_the_results():
    results, events = run(["hello world", "one, two. three", [104, 105, EOT]], stop=[". "])
    assert [r.finish_reason for r in results] == ["length", "stop", "eos"]
    assert [r.text for r in results][1:] == ["one, two", "hi"]
    for row, result in enumerate(results):
        assert "".join(row_text(events, row)) == result.text
        assert [e.finished for e in events if e.row == row][-1] == result.finish_reason


def test_a_character_split_across_tokens_is_printed_only_when_complete():
    e_acute = list("é".encode())  # two byte tokens
    (result,), events = run([[104, *e_acute, 33]], max_new_tokens=4)
    assert row_text(events, 0) == ["h", "", "é", "!"]
    assert result.text == "hé!"


def test_an_incomplete_character_at_the_end_is_flushed_as_a_replacement_character():
    (result,), events = run([[104, 0xC3]], max_new_tokens=2)
    assert result.text == "h\ufffd" and "".join(row_text(events, 0)) == "h\ufffd"


def test_the_tokenizers_end_of_text_id_ends_a_row_by_default_and_is_not_in_text_or_tokens():
    (result,), _ = run([[104, 105, EOT, 106]])
    assert (result.tokens, result.text, result.finish_reason) == ([104, 105], "hi", "eos")
    (kept,), _ = run([[104, 105, EOT, 106]], stop_on_eos=False, max_new_tokens=4)
    assert kept.tokens == [104, 105, EOT, 106] and kept.text == "hi<|endoftext|>j"


def test_stop_strings_without_a_tokenizer_are_refused():
    with pytest.raises(ValueError, match="tokenizer"):
        generate(ScriptModel({0: [1]}), [[0]], chain=GREEDY, stop=["x"], max_new_tokens=2)


def test_without_a_tokenizer_text_is_none_and_events_carry_no_text():
    model = ScriptModel({0: [104, 105]})
    (result,) = generate(model, [[0]], chain=GREEDY, max_new_tokens=3)
    assert result.text is None and result.tokens == [104, 105, 105]
    assert {e.text for e in generate_stream(model, [[0]], chain=GREEDY, max_new_tokens=3)} == {""}


# -- the pieces ---------------------------------------------------------------------------------------------

def test_holdback_is_the_longest_tail_that_begins_a_stop_string():
    stops = StopStrings(["abcd", "xy"])
    assert stops.holdback("zzab") == 2 and stops.holdback("zzabc") == 3
    assert stops.holdback("zzx") == 1 and stops.holdback("abcd!") == 0 and stops.holdback("") == 0
    assert stops.find("..xy..abcd", 0) == 2 and stops.find("..xy", 3) == -1


def test_empty_stop_strings_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings([""])


def test_text_stream_pushed_token_by_token_equals_decoding_all_at_once():
    text = "hello world, ça va? 日本"
    stream = TextStream(ENC, StopStrings())
    printed = "".join(stream.push(t) for t in ENC.encode(text)) + stream.flush()
    assert printed == stream.text == text


def test_eos_ids_come_from_the_argument_else_the_tokenizer_else_none():
    assert resolve_eos_ids([3, 4], ENC) == (3, 4)
    assert resolve_eos_ids(7) == (7,)
    assert resolve_eos_ids(None, ENC) == (EOT,)
    assert resolve_eos_ids(None, None) == ()
    no_eot = tiktoken.Encoding(name="plain", pat_str=PAT, mergeable_ranks={bytes([i]): i for i in range(256)},
                               special_tokens={})
    assert resolve_eos_ids(None, no_eot) == ()


def test_a_deadline_passes_only_after_max_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(stopping, "_clock", lambda: now[0])
    deadline, never = Deadline(2.0), Deadline(None)
    now[0] = 101.9
    assert not deadline.passed()
    now[0] = 102.0
    assert deadline.passed() and not never.passed()
