"""The project's own errors share one base class: `main()` says each as `error: …` and exits 2, whatever the
command. Errors of one shot are `generation.errors.ShotFailure` (with its cause and fix), caught per shot."""

from __future__ import annotations


class HailuoError(Exception):
    """Something the user can fix (a setting, the manifest, the key, a server to start): its text is the message
    they read, already in their terms and without secrets."""
