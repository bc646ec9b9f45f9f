"""Text encoders (report towers): tokenise, then return token features, a pooled vector and a word mask."""

from mmfm.encoders.text import hf  # noqa: F401  (register the text encoders)
from mmfm.encoders.text.base import TEXT_ENCODERS, TextEncoder, build_text_encoder

__all__ = ["TEXT_ENCODERS", "TextEncoder", "build_text_encoder"]
