"""The Oobleck VAE: loading checkpoints in their saved forms, folding the decoder, exporting it."""
