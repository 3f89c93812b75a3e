"""Computes in the admin console: IT adds, edits and deletes Ray computes (through services/computes.py,
which checks and audits them); each compute's page shows its nodes as Ray (or, for `local`, the studio's
node table) reports them: alive or dead, resources, free resources and the instances on each; and the
cores its deployments hold per instance family against each workspace's quota."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, Q
from django.utils.html import format_html, format_html_join

from endpoints_app.admin.common import state_badge
from endpoints_app.controller import clusters
from endpoints_app.controller.placement import quota_limit, reserved_instances
from endpoints_app.errors import StudioError
from endpoints_app.models import Compute, Deployment, ProvisioningState
from endpoints_app.services import computes as compute_svc
from endpoints_app.services.audit import Actor


class ComputeForm(forms.ModelForm):
    """The service's own rules, run as the form is checked, so a mistake is shown on its field."""

    class Meta:
        model = Compute
        fields = ["name", "type", "address", "description"]
        help_texts = {
            "address": "host:port of the Ray head's GCS (what `ray start --address` takes). Leave empty for a "
                       "head the studio starts on its own machine.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type"].choices = [("ray", "Ray cluster")]
        self.fields["type"].initial = "ray"
        if self.instance.pk:
            self.fields["name"].disabled = True
            self.fields["type"].disabled = True

    def clean(self):
        data = super().clean()
        spec = {"name": data.get("name") or self.instance.name, "type": data.get("type") or self.instance.type,
                "address": data.get("address") or "", "description": data.get("description") or ""}
        try:
            compute_svc.parse_spec(spec)
            if not self.instance.pk:
                compute_svc.check_new_compute(spec["name"], compute_svc.parse_address(spec["address"]))
        except StudioError as exc:
            field = exc.field if exc.field in self.fields else None
            raise forms.ValidationError({field: exc.message} if field else exc.message) from None
        return data


@admin.register(Compute)
class ComputeAdmin(admin.ModelAdmin):
    form = ComputeForm
    list_display = ["name", "type", "where", "state_shown", "nodes_shown", "deployment_count", "created_at"]
    search_fields = ["name", "address", "description"]
    actions = None  # deletes go one by one, through the service (refused while deployments use a compute)
    readonly_fields = ["state_shown", "nodes_table", "quota_table", "created_by", "created_at"]

    def get_queryset(self, request):
        compute_svc.computes()  # `local` is always there
        live = Count("deployments", filter=Q(deployments__deleted_at__isnull=True))
        return super().get_queryset(request).annotate(_deployments=live)

    def get_fieldsets(self, request, obj=None):
        main = (None, {"fields": ["name", "type", "address", "description"]})
        if obj is None:
            return [main]
        return [main, ("State and nodes", {"fields": ["state_shown", "nodes_table"]}),
                ("Cores per instance family against quotas", {"fields": ["quota_table"]}),
                ("History", {"fields": ["created_by", "created_at"]})]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj is not None and obj.is_builtin)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and (obj.is_builtin or Deployment.objects.filter(compute=obj).exists()):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        spec = {"name": obj.name, "type": obj.type, "address": obj.address, "description": obj.description}
        if change:
            stored = Compute.objects.get(pk=obj.pk)
            saved = compute_svc.do_update_compute(actor, stored, {"address": obj.address,
                                                                  "description": obj.description})
        else:
            saved = compute_svc.do_create_compute(actor, spec)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        compute_svc.do_delete_compute(Actor.from_request(request), obj)

    @admin.display(description="Head")
    def where(self, obj):
        if obj.type == Compute.Type.LOCAL:
            return "this machine (no Ray)"
        return obj.address or f"{clusters.managed_head_address()} (started by the studio)"

    @admin.display(description="State")
    def state_shown(self, obj):
        seen = clusters.view(obj)
        if not seen.detail:
            return state_badge(seen.state)
        return format_html('{} <span class="small muted">{}</span>', state_badge(seen.state), seen.detail)

    @admin.display(description="Nodes (alive / all)")
    def nodes_shown(self, obj):
        nodes = clusters.view(obj).nodes
        return f"{sum(1 for n in nodes if n['alive'])} / {len(nodes)}"

    @admin.display(description="Deployments", ordering="_deployments")
    def deployment_count(self, obj):
        return obj._deployments if hasattr(obj, "_deployments") else obj.deployments.count()

    @admin.display(description="Nodes")
    def nodes_table(self, obj):
        nodes = clusters.view(obj).nodes
        if not nodes:
            return "No node reported."
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (n["name"], n["address"], state_badge("Alive" if n["alive"] else "Dead"), _resources(n["resources"]),
             _resources(n.get("free") or {}) if n["alive"] else "—", ", ".join(n.get("instances") or []) or "—")
            for n in nodes))
        return format_html('<table class="compute-nodes"><thead><tr><th>Node</th><th>Address</th><th>State</th>'
                           "<th>Resources</th><th>Free</th><th>Instances</th></tr></thead><tbody>{}</tbody></table>",
                           rows)

    @admin.display(description="Cores held")
    def quota_table(self, obj):
        rows = {}
        deployments = (Deployment.objects.filter(compute=obj).exclude(provisioning_state=ProvisioningState.DELETING)
                       .select_related("instance_type", "endpoint__workspace"))
        for d in deployments:
            key = (d.endpoint.workspace, d.instance_type.family)
            rows[key] = rows.get(key, 0) + d.instance_type.cores * reserved_instances(d)
        if not rows:
            return "No deployment runs here."
        shown = []
        for (workspace, family), held in sorted(rows.items(), key=lambda r: (r[0][0].name, r[0][1])):
            shown.append((workspace.name, family, held, quota_limit(workspace, family)))
        return format_html('<table class="compute-quotas"><thead><tr><th>Workspace</th><th>Instance family</th>'
                           "<th>Cores held here</th><th>Quota (cores)</th></tr></thead><tbody>{}</tbody></table>",
                           format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", shown))


def _resources(values: dict) -> str:
    shown = []
    for key, value in values.items():
        if key == "object_store_memory":
            continue
        number = f"{value:g}"
        shown.append(f"{key} {number} GB" if key == "memory" else f"{key} {number}")
    return ", ".join(shown) or "—"
