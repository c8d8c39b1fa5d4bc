"""Batch prediction: score a BigQuery table or Cloud Storage files with a model version
and write one prediction per input key to BigQuery (``scoring``); the Vertex AI
``BatchPredictionJob`` that does the same in the cloud (``vertex``); the job entry point
(``task``)."""
