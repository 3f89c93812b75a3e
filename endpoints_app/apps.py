from django.apps import AppConfig


def _identity_roles_changed(sender, instance, created: bool = True, **kwargs) -> None:
    """Who may present identity tokens where lives in the gateway's route table: reload it."""
    if sender.__name__ == "OidcIdentity" and not created:
        return  # a sign-in refreshing names and groups changes no role
    from endpoints_app.models import RouteVersion

    RouteVersion.bump()


class EndpointsAppConfig(AppConfig):
    name = "endpoints_app"
    verbose_name = "Studio"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from endpoints_app.models import Membership, OidcIdentity, ServicePrincipal

        for model in (Membership, OidcIdentity, ServicePrincipal):
            post_save.connect(_identity_roles_changed, sender=model, dispatch_uid=f"identity-routes-{model.__name__}")
            post_delete.connect(_identity_roles_changed, sender=model,
                                dispatch_uid=f"identity-routes-delete-{model.__name__}")
