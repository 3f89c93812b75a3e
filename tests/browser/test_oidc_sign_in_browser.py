"""Sign-in with the company's OpenID provider in a real browser: the studio's button, the provider's own
login page (oidc-provider from npm), back in the studio with the role IT mapped from the user's group,
and sign-out that ends the provider's session too."""

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.models import AuditLog, GroupRoleMapping, Membership, OidcIdentity, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def studio_url(live_server, identity_provider, settings):
    identity_provider.configure(settings)
    settings.STUDIO_OIDC_ADMIN_GROUPS = ["it-admins"]
    # The provider takes loopback redirects on any port for this client, by address (RFC 8252).
    return live_server.url.replace("localhost", "127.0.0.1")


def test_sign_in_with_the_provider_lands_with_the_mapped_role_and_sign_out_ends_both_sessions(
        browser, studio_url, identity_provider, workspace, owner, shoot):
    GroupRoleMapping.objects.create(group="ml-team", workspace=workspace, role=Role.CONTRIBUTOR)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    # The provider's development pages import a web font; this machine has no way out.
    context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    page = context.new_page()

    page.goto(f"{studio_url}/endpoints/")
    page.wait_for_url(f"{studio_url}/login/?next=/endpoints/")
    assert page.locator("#sso-sign-in").inner_text() == "Sign in with Test IdP"
    shoot(page, "oidc-login-page")
    page.click("#sso-sign-in")
    page.wait_for_url(f"{identity_provider.issuer}/interaction/**")
    shoot(page, "oidc-provider-login")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_selector("button[autofocus], button[type=submit]")
    shoot(page, "oidc-provider-consent")
    page.click("button[type=submit]")  # the provider asks a native client's user to confirm
    page.wait_for_url(f"{studio_url}/endpoints/")
    shoot(page, "oidc-signed-in")

    user = OidcIdentity.objects.get(issuer=identity_provider.issuer, subject="alice").user
    assert page.locator("header .user span").inner_text() == user.username == "alice"
    assert user.email == "alice@example.com" and not user.has_usable_password()
    assert Membership.objects.get(user=user, workspace=workspace).role == Role.CONTRIBUTOR
    assert page.locator("#ws-select option").first.inner_text() == "team (Contributor)"
    assert AuditLog.objects.filter(action="user.sign_in_oidc", username="alice").exists()

    page.click("header form button:has-text('Sign out')")
    page.wait_for_url(f"{identity_provider.issuer}/session/end**")
    shoot(page, "oidc-provider-sign-out")
    page.click("button[autofocus], button[type=submit]")
    page.wait_for_url(f"{studio_url}/login/")
    shoot(page, "oidc-signed-out")

    # Both sessions ended: the studio asks for sign-in, and the provider asks for the password again.
    page.goto(f"{studio_url}/")
    page.wait_for_url(f"{studio_url}/login/?next=/")
    page.click("#sso-sign-in")
    page.wait_for_url(f"{identity_provider.issuer}/interaction/**")
    assert page.locator("input[name=login]").count() == 1
    context.close()


def test_each_sign_in_applies_the_current_group_mapping(browser, studio_url, identity_provider, workspace, owner):
    """dave is in ml-team and it-admins: Owner of the workspace IT mapped, and staff of the admin console."""
    GroupRoleMapping.objects.create(group="ml-team", workspace=workspace, role=Role.OWNER)
    context = browser.new_context()
    context.set_default_timeout(15_000)
    context.route("https://fonts.googleapis.com/**", lambda route: route.abort())
    page = context.new_page()

    def sign_in() -> None:
        page.goto(f"{studio_url}/login/")
        page.click("#sso-sign-in")
        page.wait_for_url(f"{identity_provider.issuer}/**")
        if page.locator("input[name=login]").count():
            page.fill("input[name=login]", "dave")
            page.fill("input[name=password]", "x")
            page.click("button[type=submit]")
        page.click("button[type=submit]")
        page.wait_for_url(f"{studio_url}/")

    sign_in()
    dave = get_user_model().objects.get(username="dave")
    assert Membership.objects.get(user=dave, workspace=workspace).role == Role.OWNER
    assert dave.is_staff and dave.is_superuser

    GroupRoleMapping.objects.filter(group="ml-team").delete()  # IT takes the mapping away
    page.context.clear_cookies()
    sign_in()
    assert not Membership.objects.filter(user=dave, workspace=workspace).exists()
    context.close()
