"""Model registry, preprocessing and batched inference.

Import the submodules (`registry`, `preprocess`, `predict`) directly: this package's top level
imports nothing, so that code which only names it does not pay for importing torch.
"""

from __future__ import annotations
