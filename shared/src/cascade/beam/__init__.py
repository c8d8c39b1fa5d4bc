"""Apache Beam for what a function cannot hold: a file's statistics computed in blocks
across workers (Dataflow in the cloud, Beam's FnApiRunner in the local job service),
with the validation package's own per-block summaries and merge (docs/beam.md).

``--mode=materialize`` runs the transform's train/eval split instead
(``cascade.beam.materialize``), with the transform package's own per-file split.

``cascade.beam.blocks``, ``cascade.beam.block_statistics`` and
``cascade.beam.materialize_request`` import no Beam: the functions' venv imports them
(tests, routing); ``cascade.beam.pipeline`` and ``cascade.beam.materialize`` need
``apache_beam`` and run only in ``.venv-beam`` and the Flex Template image.
"""
