"""Booting built images in QEMU (serial console, QMP keys, the screen): `golem-live boot`, tests."""
