"""Talking to fal's queue API through fal_client: one code path for fal, a proxy or the emulator."""
