"""llama-bootstrap: provision and verify FlagAlpha/Llama2-Chinese on your own hardware.

Importing this package does no work: no torch, no transformers, no network.
"""

__version__ = "0.1.0"
