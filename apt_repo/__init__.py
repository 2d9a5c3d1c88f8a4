"""The signed APT repository of GOLEM's components: fetch, package, index, sign (`golem-live repo`).

components.toml lists what goes in; github.py fetches it; debpkg.py builds the
project's own packages; archive.py indexes and signs; keys.py manages the key;
sources.py writes deb822 sources; cli.py is the `golem-live repo` command group.
"""
