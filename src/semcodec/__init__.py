"""semcodec: semantic image coding at micro-bits per pixel."""
