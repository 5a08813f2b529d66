"""Benchmarks (``make bench``). They run as the command line does: with the allocator set to
keep freed blocks (``convfilt.retain_freed_blocks``, the library's explicit opt-in)."""

from convfilt.memory import retain_freed_blocks

retain_freed_blocks()
