"""Turning validated shots into paid, verified, recorded videos, safely under every failure."""
