"""The one error type of the model layer: what went wrong, where, and what to do."""


class ModelError(ValueError):
    """A GGUF file that does not describe a model ktx can build (unknown architecture, missing tensor...)."""
