"""DiffIR restoration pipeline (``lsb.DiffIRPipeline``)."""
