"""Rows that join and leave: a row's outputs do not depend on its company or on when it joined.

``check_rows_join_and_leave`` runs the processor through a real ``ChainRun`` the way a
continuous-batching scheduler does: rows with ragged prompts (left-padded, with an attention
mask), each with its own seed and its own logits at each of its steps, join the run at different
steps (``add_rows``: ``start`` on the new rows, merged by ``join_rows``) and leave when done
(``keep_rows``). Each row's outputs, step by step, must equal that row run alone.

``check_rows_carry_values`` does the same with rows that carry their own values: each row's own
processor (its per-row parameters drawn from their declarations, or from the variants given)
joins the run through ``row_chains``, and each row's outputs must equal that row's processor
run alone.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from samplekit.processor import Processor, Stage
from samplekit.testing.cases import Case, fail, same


def check_rows_join_and_leave(p: Processor, case: Case, who: str, steps: int, data) -> None:
    if p.stage is Stage.CONTEXT or case.batch < 2:
        return
    steps = max(steps, 3)
    b, t = case.batch, case.ids.shape[1]
    joins = [0] + [data.draw(st.integers(0, steps - 1), label=f"row {r} joins at") for r in range(1, b)]
    lengths = [data.draw(st.integers(1, steps), label=f"row {r} steps") for r in range(b)]
    prompts = [case.ids[r, :data.draw(st.integers(1, max(t, 1)), label=f"row {r} prompt")].tolist() or [0]
               for r in range(b)]
    batched = _simulate(p, case, who, list(range(b)), joins, lengths, prompts)
    for r in range(b):
        alone = _simulate(p, case, who, [r], [0], [lengths[r]], [prompts[r]])[r]
        for s, (a, got) in enumerate(zip(alone, batched[r])):
            if not same(got, a):
                fail(who, "rows join and leave", f"row {r} (joining at run step {joins[r]}, rows joining at {joins} "
                     f"and running {lengths} steps each) differs from the same row run alone at its step {s}:\n"
                     f"  alone={a.tolist()}\n  in the batch={got.tolist()}\n  per-row state must be created by "
                     "start() for the rows given, merged by join_rows() and count steps with ctx.steps, not ctx.step")


def check_rows_carry_values(p: Processor, case: Case, who: str, steps: int, data, variants) -> None:
    """Rows with their own per-row values, joining and leaving, each equal to its own processor alone."""
    if p.stage is Stage.CONTEXT or case.batch < 2 or not p.per_row_params():
        return
    steps = max(steps, 3)
    b, t = case.batch, case.ids.shape[1]
    own = {r: p if r == 0 else data.draw(st.sampled_from(variants), label=f"row {r}'s own processor")
           for r in range(b)}
    joins = [0] + [data.draw(st.integers(0, steps - 1), label=f"row {r} joins at") for r in range(1, b)]
    lengths = [data.draw(st.integers(1, steps), label=f"row {r} steps") for r in range(b)]
    prompts = [case.ids[r, :data.draw(st.integers(1, max(t, 1)), label=f"row {r} prompt")].tolist() or [0]
               for r in range(b)]
    _check_keeps_top_rows(p, case, who, own)
    batched = _simulate(p, case, who, list(range(b)), joins, lengths, prompts, own)
    for r in range(b):
        alone = _simulate(own[r], case, who, [r], [0], [lengths[r]], [prompts[r]])[r]
        for s, (a, got) in enumerate(zip(alone, batched[r])):
            if not same(got, a):
                values = {r: dict(own[r].settings) for r in own}
                fail(who, "rows carry their own values", f"row {r} (its own values {own[r].settings}; the rows' "
                     f"values {values}, joining at {joins}, running {lengths} steps) differs from the same row run "
                     f"alone with its values at its step {s}:\n  alone={a.tolist()}\n  among the others="
                     f"{got.tolist()}\n  read per-row parameters with self.row_value(ctx, name, scores) (never "
                     "self.name), in start() too, and compute from them exactly as from the scalar")


def _check_keeps_top_rows(p: Processor, case: Case, who: str, own: dict[int, Processor]) -> None:
    """The promise ``keeps_top_rows(vocab, ctx)``: each row's own ``keeps_top(vocab)``."""
    from samplekit.strategy import promised

    rows_k = promised(p, "keeps_top_rows")
    if rows_k is None:
        return
    rows = sorted(own)
    run = _chain(p).start(len(rows), seeds=[case.seeds[r] for r in rows], row_chains=[_chain(own[r]) for r in rows])
    for vocab in (case.vocab, 1, 2**20):
        got, want = list(rows_k(vocab, run.ctx)), [own[r].keeps_top(vocab) for r in rows]
        if got != want:
            fail(who, "declares keeps_top_rows", f"for a vocabulary of {vocab} it gives {got}, but each row's own "
                 f"keeps_top gives {want}")


def _chain(p: Processor):
    from samplekit.chain import Chain

    return Chain([p], checked=False, fast_paths=False, logits_only=p.stage is Stage.LOGITS)


def _simulate(p: Processor, case: Case, who: str, rows: list[int], joins: list[int], lengths: list[int],
              prompts: list[list[int]], own: dict[int, Processor] | None = None) -> dict[int, list[torch.Tensor]]:
    """Each row's outputs (processed logits, or tokens) at each of its own steps; ``own``: each
    row's own processor (its chain joins the run as that row's ``row_chains`` entry)."""
    chain, run = _chain(p), None
    row_chains = {r: _chain(q) for r, q in own.items()} if own else None
    active: list[int] = []
    history = {r: list(prompts[i]) for i, r in enumerate(rows)}
    done = {r: 0 for r in rows}
    out: dict[int, list[torch.Tensor]] = {r: [] for r in rows}
    for step in range(max(j + n for j, n in zip(joins, lengths))):
        joining = [r for r, j in zip(rows, joins) if j == step]
        if joining:
            seeds = [case.seeds[r] for r in joining]
            lengths_now = torch.tensor([len(history[r]) for r in joining], dtype=torch.long)
            mine = [row_chains[r] for r in joining] if row_chains else None
            try:
                if run is None:
                    run = chain.start(len(joining), seeds=seeds, prompt_lengths=lengths_now,
                                      context_length=case.context_length, tokenizer=case.tokenizer,
                                      eos_token_ids=case.eos_token_ids, row_chains=mine)
                else:
                    run.add_rows(len(joining), seeds=seeds, prompt_lengths=lengths_now, row_chains=mine)
            except AssertionError:
                raise
            except Exception as exc:
                fail(who, "rows join and leave", f"start() or join_rows() raised {type(exc).__name__}: {exc} at "
                     f"run step {step} with rows {joining} joining")
            active += joining
        if not active:
            continue
        width = max(len(history[r]) for r in active)
        ids = torch.tensor([[0] * (width - len(history[r])) + history[r] for r in active], dtype=torch.long)
        ragged = any(len(history[r]) != width for r in active)
        run.ctx.attention_mask = torch.tensor([[False] * (width - len(history[r])) + [True] * len(history[r])
                                               for r in active]) if ragged else None
        scores = torch.stack([case.scores[r].roll(done[r]) for r in active])  # each row's own step
        try:
            if p.stage is Stage.SELECTOR:
                result = tokens = run.select(ids, scores)
            else:
                result = run.process(ids, scores)
                tokens = result.argmax(dim=-1)
                run.accept(tokens)
        except AssertionError:
            raise
        except Exception as exc:
            fail(who, "rows join and leave", f"raised {type(exc).__name__}: {exc} at run step {step} with rows "
                 f"{active} (joining at {joins})")
        for i, r in enumerate(active):
            out[r].append(result[i])
            history[r].append(int(tokens[i]))
            done[r] += 1
        keep = [i for i, r in enumerate(active) if done[r] < lengths[rows.index(r)]]
        if len(keep) < len(active):
            run.keep_rows(torch.tensor(keep, dtype=torch.long))
            active = [active[i] for i in keep]
    return out
