"""Upstream llama.cpp: builds on a package index, and what each build supports."""
