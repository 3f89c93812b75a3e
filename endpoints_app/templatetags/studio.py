"""Template filters of the studio's pages."""

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def breakable(value) -> str:
    """A URI or name that may wrap after each `/` (and, as browsers do anyway, after `-`), never
    mid-word: a <wbr> after every slash. Copying the text gives the URI unchanged."""
    return mark_safe(escape(str(value)).replace("/", "/<wbr>"))
