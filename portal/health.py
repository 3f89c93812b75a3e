from django.db import connection
from django.http import JsonResponse

from portal.celery import app as celery_app


def healthz(request):
    """200 once web, database and broker are reachable."""
    problems = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - report any database failure
        problems["database"] = type(exc).__name__
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - report any broker failure
        problems["broker"] = type(exc).__name__
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})
