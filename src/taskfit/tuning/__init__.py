"""Tuning: supervised fine-tuning data, PEFT / full training, merging."""
