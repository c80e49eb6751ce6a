"""Shots: one image + one prompt + duration + prompt_optimizer = one paid video."""
