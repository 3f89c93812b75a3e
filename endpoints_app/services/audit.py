"""The audit record lives in endpoints_app/audit.py (the controller audits too, and never imports
services); the services, views and API take it from here as before."""

from endpoints_app.audit import SYSTEM, Actor, record

__all__ = ["SYSTEM", "Actor", "record"]
