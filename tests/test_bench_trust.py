"""samplekit.bench.trust: a busy machine and repeats that disagree are named, and the estimate
of the time left follows the warm-ups. (Pure functions of given timings: nothing is timed.)"""

from __future__ import annotations

import pytest

from samplekit.bench.trust import batch_doubts, busy_note, duration, remaining, spread


def row(samplekit, bare, paired):
    median = sorted(samplekit)[len(samplekit) // 2], sorted(bare)[len(bare) // 2]
    return {"batch_size": 8, "samplekit": {"seconds": median[0], "all_seconds": samplekit},
            "bare": {"seconds": median[1], "all_seconds": bare}, "ratios": {"overhead_vs_bare": paired}}


def test_agreeing_repeats_raise_no_doubt():
    assert batch_doubts(row([1.00, 1.02, 1.01], [0.95, 0.96, 0.97], 0.05)) == []


def test_repeats_far_apart_are_named_with_their_range():
    (doubt,) = batch_doubts(row([1.0, 1.02, 1.01], [0.9, 2.5, 0.95], 0.06))
    assert "repeats of bare disagree" in doubt and "0.9 to 2.5 s" in doubt


def test_a_paired_ratio_that_contradicts_the_medians_is_named():
    """The issue's case: the table said 83.7 against 53.7 tokens/s (samplekit faster), the ratios +4.1%."""
    doubts = batch_doubts(row([1.00, 1.05, 1.10], [1.56, 1.60, 1.70], 0.041))
    assert any("+4.1%" in d and "disagree" in d for d in doubts), doubts


@pytest.mark.parametrize("load, busy", [(0.5, False), (2.0, False), (2.1, True), (6.0, True)])
def test_a_load_average_above_the_cores_is_a_busy_machine(load, busy):
    note = busy_note({"load": 0.1, "cores": 2}, {"load": load, "cores": 2})
    assert (note is not None) == busy
    if busy:
        assert f"load average up to {load:.1f} on 2 cores" in note


def test_the_estimate_scales_the_warmups_by_repeats_and_batch_size():
    warmups = {"samplekit": 2.0, "bare": 1.0, "chain": 1.0}  # 4 s per run of every variant
    assert remaining(warmups, 3, [1], 0) == 12.0  # this batch's three repeats
    # then batch 8 (a step costs 1 + 7/4 = 2.75 times batch 1's): a warm-up and three repeats
    assert remaining(warmups, 3, [1, 8], 0) == pytest.approx(12.0 + 4 * 2.75 * 4)
    assert remaining(warmups, 3, [1, 8], 1) == 12.0


def test_spread_and_duration():
    assert spread([1.0]) == 0.0 and spread([1.0, 1.5, 2.0]) == pytest.approx(2 / 3)
    assert duration(0.2) == "1 s" and duration(40) == "40 s" and duration(240) == "4 min"


def synthetic_report(doubts):
    def variant(seconds):
        return {"seconds": seconds, "ms_per_token": seconds, "tokens_per_s": 8 / seconds, "peak_mem_mib": None,
                "best_seconds": seconds, "all_seconds": [seconds]}
    row = {"batch_size": 8, "samplekit": variant(1.0), "bare": variant(1.6), "chain": variant(0.1),
           "ratios": {"overhead_vs_bare": 0.041, "chain_share": 0.1}, "doubts": doubts}
    warnings = [f"batch 8: {'; '.join(doubts)}: its ratios are withheld"] if doubts else []
    return {"model": "demo", "config": {"n_layers": 1, "n_heads": 1, "emb_dim": 8, "vocab_size": 16,
                                        "context_length": 8}, "parameters": 1e6, "device": "cpu", "threads": 1,
            "cpus": 2, "torch": "x", "transformers": None, "prompt_tokens": 4, "new_tokens": 8, "repeats": 3,
            "chain": ["greedy"], "strategy": "dense", "batches": [row], "warnings": warnings}


def printed(report) -> str:
    from rich.console import Console

    from samplekit.bench import print_report

    console = Console(width=200, record=True, color_system=None)
    print_report(report, console)
    return console.export_text()


def test_a_doubtful_batch_prints_the_warning_and_withholds_ratios_that_contradict_the_table():
    text = printed(synthetic_report(["the paired overhead over the bare loop (+4.1%) and the one of the "
                                     "medians (-37.5%) disagree"]))
    assert "warning: batch 8: the paired overhead" in text
    assert "withheld: the repeats disagree" in text and "+4.1%" not in text.split("ratios")[-1], text


def test_trustworthy_figures_print_their_ratios_and_no_warning():
    text = printed(synthetic_report([]))
    assert "warning" not in text and "+4.1%" in text


def test_the_report_carries_the_load_the_warnings_and_each_batchs_doubts():
    from samplekit.bench import run_bench

    report = run_bench("tiny", batch_sizes=(1,), prompt_tokens=4, new_tokens=2, repeats=2)
    assert set(report["load"]) == {"before", "after"} and report["load"]["before"]["cores"] >= 1
    assert isinstance(report["batches"][0]["doubts"], list)
    assert report["trustworthy"] == (not report["warnings"])
