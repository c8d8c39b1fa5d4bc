"""Serving: ``serving.json`` (which versions serve, with their traffic split) and the local
model server, a Flask app under gunicorn speaking the TF Serving REST API and Vertex AI's
predict route. Importing this package imports neither TensorFlow nor Flask.
"""
