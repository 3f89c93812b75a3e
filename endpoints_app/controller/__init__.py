"""The controller: drives model-server processes to the desired state the services write.

- placement.py: quota and capacity admission checks, node choice, ports, node registration.
- process.py: start / recognise / probe / stop model-server processes on this node
  (own session, log in $STUDIO_DATA_DIR/logs/instances, pid file in $STUDIO_DATA_DIR/run/instances).
- reconcile.py: the level-triggered loop (plan rows, converge processes, autoscale, deletes).
  It audits through endpoints_app.audit and never imports services.
- tasks.py: the Celery tasks (beat `reconcile`, `provision_deployment`, `reconcile_deployment`,
  `converge_node` on a node's own queue `node.<name>`), ids only, each safe to run twice; long work
  (rollouts, deletes) advances one short pass per task, re-queued with a countdown.

Settings: STUDIO_NODE_NAME (hostname), STUDIO_NODE_HOST (127.0.0.1), STUDIO_NODE_CORES (4 x cores),
STUDIO_NODE_MEMORY_GB (2 x RAM), STUDIO_DEFAULT_CORE_QUOTA (32), STUDIO_RECONCILE_SECONDS (5),
STUDIO_DRAIN_SECONDS (3), STUDIO_MAX_RESTARTS (3), STUDIO_INSTANCE_PORT_MIN/MAX (20000-29999)."""
