"""Transform: from a dataset's accepted files to a fitted, versioned transform spec and
deterministic train/eval Parquet shards. The spec is what the trainer builds the
model's preprocessing layers from, so serving applies the very transform training did.
"""
