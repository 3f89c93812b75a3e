"""Users and their workspace roles, workspaces, quotas."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from endpoints_app.admin.common import AuditedAdmin
from endpoints_app.admin.serverless import ServerlessRateLimitInline
from endpoints_app.models import (
    ApiToken,
    InstanceType,
    Membership,
    QuotaLimit,
    ServerlessRateLimit,
    Workspace,
)
from endpoints_app.services.audit import Actor
from endpoints_app.services.ratelimits import do_overrides_changed

User = get_user_model()


class QuotaLimitForm(forms.ModelForm):
    """The family is a choice among the instance types' families: a typo would silently limit nothing."""

    family = forms.ChoiceField(choices=())

    class Meta:
        model = QuotaLimit
        fields = ["workspace", "family", "max_cores"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        families = sorted(set(InstanceType.objects.values_list("family", flat=True)))
        current = self.instance.family if self.instance and self.instance.pk else None
        if current and current not in families:
            families.append(current)  # shown so IT can see and fix it; clean() still refuses it
        self.fields["family"].choices = [("", "---------")] + [(f, f) for f in families]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class UserMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "user"
    extra = 0
    autocomplete_fields = ["workspace"]
    verbose_name = "workspace role"
    verbose_name_plural = "Workspace roles"


class QuotaInline(admin.TabularInline):
    model = QuotaLimit
    form = QuotaLimitForm
    extra = 0


admin.site.unregister(User)


@admin.register(User)
class StudioUserAdmin(AuditedAdmin, DjangoUserAdmin):
    list_display = ["username", "email", "workspaces", "is_staff", "is_active", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active", "memberships__role"]
    inlines = [UserMembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("memberships__workspace")

    @admin.display(description="Workspaces")
    def workspaces(self, obj):
        return ", ".join(f"{m.workspace.name} ({m.role})" for m in obj.memberships.all()) or "—"


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens by prefix only: the database holds digests, and values are shown once to their user."""

    list_display = ("prefix_label", "user", "created", "last_used", "expiry")
    list_filter = ("expiry",)
    search_fields = ("user__username", "token_key")
    fields = ("prefix_label", "user", "created", "last_used", "expiry")
    readonly_fields = fields

    @admin.display(description="prefix", ordering="token_key")
    def prefix_label(self, obj):
        return f"{obj.token_key}…"

    def has_add_permission(self, request, obj=None):
        return False  # made by their user on the Tokens page, the API or drf_create_token

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Workspace)
class WorkspaceAdmin(AuditedAdmin):
    list_display = ["name", "display_name", "member_count", "endpoint_count", "monthly_budget", "created_at"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline, QuotaInline, ServerlessRateLimitInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _members=Count("memberships", distinct=True),
                # Deleted endpoints are kept for billing, not counted here.
                _endpoints=Count("endpoints", filter=Q(endpoints__deleted_at__isnull=True), distinct=True),
            )
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for formset in formsets:
            if formset.model is ServerlessRateLimit and formset.has_changed():
                do_overrides_changed(Actor.from_request(request), form.instance)

    @admin.display(description="Members", ordering="_members")
    def member_count(self, obj):
        return obj._members

    @admin.display(description="Endpoints", ordering="_endpoints")
    def endpoint_count(self, obj):
        url = reverse("admin:endpoints_app_endpoint_changelist") + f"?workspace__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj._endpoints)


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    list_select_related = ["user", "workspace"]
    search_fields = ["user__username", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(QuotaLimit)
class QuotaLimitAdmin(AuditedAdmin):
    form = QuotaLimitForm
    list_display = ["workspace", "family", "max_cores"]
    list_editable = ["max_cores"]
    list_filter = ["family", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["workspace__name", "family"]
    autocomplete_fields = ["workspace"]
