"""Release artifacts of built images: compressed image, block map, lock file, signed
checksums and the meta.json that GOLEM's imager reads (`golem-live release`)."""
