"""Deployment of blessed models behind one ``Deployer`` interface: Vertex AI endpoints
(``vertex``) and the local model server (``local``); ``rollout`` drives either through
canary, checks, promotion or rollback, and retirement of old versions.
"""
