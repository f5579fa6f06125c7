"""Offline stand-ins for the real pipeline: a tiny Llama chat model, a local Hub, a local git source."""
