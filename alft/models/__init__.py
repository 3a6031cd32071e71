"""Models: the encoder and its embedding cache, classifier and generative trainers, zero-shot,
and the MLflow pyfunc wrapper. Heavy libraries (torch, transformers, peft) load inside functions."""
