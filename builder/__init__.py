"""golem-live: the engine that builds live images for GPU compute nodes."""
