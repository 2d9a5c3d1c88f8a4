"""The USB image's partition layout (layout.toml) and its assembly into a disk image."""
