"""The signed APT repository of GOLEM's components (issue 4).

components.toml lists what goes in; github.py fetches it; debpkg.py builds the
project's own packages; archive.py indexes and signs; keys.py manages the key;
cli.py is the `golem-live repo` command group.
"""
