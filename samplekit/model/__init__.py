"""Models samplekit can drive: the bundled GPTModel, its checkpoints and tokenizers.

``gpt`` the model; ``checkpoint`` loading and saving .pt files (``weights`` checks a config
against the tensors before building the model, ``files`` reads weight files without running
their code, ``sidecar`` keeps metadata beside a checkpoint); ``hf_gpt2`` Hugging Face GPT-2
folders; ``tokenizer`` tiktoken encodings and their fit with a model's vocabulary; ``device``.
"""

from samplekit.model.gpt import GPTModel, KVCache, ModelConfig

__all__ = ["GPTModel", "KVCache", "ModelConfig"]
