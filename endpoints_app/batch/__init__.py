"""Batch job execution: the batch controller (controller.py) and its Celery tasks (tasks.py).

It runs a job's mini-batches on model-server instances started for the job, and never imports
`services` (the services write jobs; this package runs them)."""
