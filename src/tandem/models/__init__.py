"""Models: building, loading and saving causal LMs and tokenizers (Hugging Face directories, GGUF, LoRA, sharded exports)."""
