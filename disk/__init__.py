"""Disks and filesystem images: the USB partition layout, FAT and ext4 images, GPT assembly."""
