"""ktx.core: the hardware-neutral heart of ktx (GGUF, kernels, models, runtime, CLI).

Importing it is cheap: torch and the vendor SDKs load only when something needs them.
"""

__version__ = "0.1.0"


def load(*args, **kwargs):
    """`ktx.core.load(gguf_path, *, model_path=None, rules=None, device="auto", cpu_threads=None)`.

    The injected transformers model with `.tokenizer` and `.config`; see `ktx.core.loader.load`.
    Imported on first call, so `import ktx.core` stays free of torch and transformers.
    """
    from .loader import load as _load

    return _load(*args, **kwargs)
