"""samplekit's own step strategies, registered through the ``step_strategy`` hook like any plugin's.

- ``samplekit.strategies.top_k``: after a top-k, sample among its k candidates (one
  full-vocabulary ``topk``);
- ``samplekit.strategies.filter``: a filter such as top-p finds its own few candidates.

Both share ``samplekit.strategies.candidates``. Block one with ``SAMPLEKIT_BLOCK_PLUGINS``
(``samplekit.strategies.top_k``); every step then runs densely, with the same tokens.
"""
