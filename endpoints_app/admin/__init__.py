"""The admin console for IT: users and roles, workspaces, quotas, instance types,
catalog models, the read-only audit log, every endpoint, deployment and instance
across workspaces, prices and costs. Each model is registered once, in its module."""

from django.contrib import admin

admin.site.site_header = "Studio admin console"
admin.site.site_title = "Studio admin"
admin.site.index_title = "IT administration"
admin.site.site_url = "/"

from endpoints_app.admin import (  # noqa: E402, F401 - they register
    accounts,
    catalog,
    computes,
    datastores,
    environments,
    identity,
    resources,
    serverless,
    usage,
)
