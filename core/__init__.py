"""ktx.core: the hardware-neutral heart of ktx (GGUF, kernels, models, runtime, CLI).

Importing it is cheap: torch and the vendor SDKs load only when something needs them.
"""

__version__ = "0.1.0"
