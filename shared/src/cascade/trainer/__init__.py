"""The trainer: ``python -m cascade.trainer.task``, Keras on TensorFlow.

Laid out like a TFX trainer template, one responsibility per module:

- ``args``: the one documented ``TrainerArgs`` object, built at the edge from the
  command line and the environment Vertex AI (or the local job runner) sets;
- ``hyperparameters``: the validated hyperparameters of one run or tuning trial;
- ``storage``: gs:// (and local) reads and writes through the artifact store seam;
- ``data``: tf.data input from the transform's Parquet shards, label encoding;
- ``preprocessing``: Keras preprocessing layers built from the transform spec, and the
  same transform as a plain function;
- ``model``: raw inputs → preprocessing → MLP → binary / multiclass / regression head;
- ``strategy``: the distribution strategy chosen from the cluster and the devices;
- ``export``: the serving SavedModel (raw feature values in, predictions and key out);
- ``evaluation``: candidate and baseline metrics, overall and per slice;
- ``probe``: the load-and-probe infrastructure check, run in a fresh process;
- ``task``: the run function that ties them together.

Importing this package does not import TensorFlow; the modules that need it do.
"""
