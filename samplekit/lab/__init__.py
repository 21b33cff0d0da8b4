"""The sampling lab: measure chains side by side on the same prompts, and replay recorded logits.

- ``measures``: the text measures of Holtzman et al. (2020): Self-BLEU, Zipf, repetition,
  distinct-n, and perplexity from per-token losses;
- ``scoring``: teacher-forced forward passes (the model's own probabilities of a text);
- ``corpus``: the demo model's held-out passages (prompt + human continuation), and prompt
  files; ``heldout`` rebuilds the bundled passages;
- ``chains``: the chains compared, each with its row's name;
- ``sampling``: generation for a comparison (one function in front of the engine);
- ``compare``: a row of measures per chain (plus the human row);
- ``record`` / ``replay``: store the model's top-N logits once, then run any chain on them;
  ``apply``: the lab's only calls into a chain's run;
- ``plots``: pictures of both (matplotlib, the ``plot`` extra); ``report``: tables and JSON.

Nothing here is imported by the core, and nothing here imports an extra at import time.
"""
