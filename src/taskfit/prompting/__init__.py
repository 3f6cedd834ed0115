"""Prompts, answer parsers and strategies (ways of asking a model)."""
