"""golemwz: the provider wizard that configures a GOLEM GPU live image on first boot."""
