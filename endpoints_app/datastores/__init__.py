"""Datastores: where data lives (the studio's own store, Azure Blob containers, S3 buckets, folders
IT allows), reached through the storage services' official SDKs. `storage` opens them, `secrets`
keeps their credentials encrypted at rest, `uris` parses `azureml://datastores/<name>/paths/<path>`."""
