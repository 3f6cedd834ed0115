"""Prompt building, answer formats, demonstrations, reasoning, instruction search and the strategies made of them."""
