"""The `golem-live` command: assembles the engine (builder/), the stages (stages/), the
repository tools (apt_repo/) and the QEMU boots (boot_test/) into one CLI."""
