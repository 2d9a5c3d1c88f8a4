"""`make bench`: this project's build beside Debian's live-build, written to
docs/benchmarks.md (not a test: it takes long and measures this machine)."""
