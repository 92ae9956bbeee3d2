"""Core I/O: images (load, validate, convert, save), latents (VAE encode/decode), execution device."""
