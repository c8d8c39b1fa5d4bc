"""The pipeline's steps; each module has one public entry per trigger."""
