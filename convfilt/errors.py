"""The two kinds of failure the CLI reports, each with its exit code (see DESIGN.md)."""

from __future__ import annotations


class ConvfiltError(Exception):
    """A runtime failure: unreadable image, no match above the threshold, ... (exit 1)."""

    exit_code = 1


class UsageError(ConvfiltError):
    """A bad option value or an impossible request, e.g. a probe larger than the scene (exit 2)."""

    exit_code = 2
