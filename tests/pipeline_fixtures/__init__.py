"""Helpers for the pipeline tests: a local OpenAI-compatible server and tiny random models."""
