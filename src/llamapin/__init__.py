"""llamapin: keep a bundled llama.cpp llama-server pinned, current and proven."""

__version__ = "0.1.0"
