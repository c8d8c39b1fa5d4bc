"""Training and tuning jobs behind one interface: Vertex AI, or the local job runner."""
