"""Models samplekit can drive: the bundled GPTModel, its checkpoints and tokenizers."""

from samplekit.model.gpt import GPTModel, KVCache, ModelConfig

__all__ = ["GPTModel", "KVCache", "ModelConfig"]
