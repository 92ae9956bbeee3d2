"""Functions the pipelines share (latent I/O glue, prompt pairs, guidance, masks, SDEdit, loading).

Functions only: diffusers' custom-pipeline loader needs one DiffusionPipeline subclass per file, so no base classes."""
