"""`/api/v1/tokens`: the caller's own API tokens."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from endpoints_app.models import ApiToken
from endpoints_app.services.audit import Actor
from endpoints_app.services.tokens import api_tokens_of, do_create_api_token, do_revoke_api_token


class ApiTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(help_text="The token's first characters, to tell it apart.")
    expires = serializers.DateTimeField(source="expiry", allow_null=True)

    class Meta:
        model = ApiToken
        fields = ["id", "prefix", "created", "last_used", "expires"]
        read_only_fields = fields


class NewApiTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(source="value", help_text="The token itself: shown once, never again.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    expires_in_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3650)


@extend_schema_view(
    list=extend_schema(responses=ApiTokenSerializer(many=True)),
    create=extend_schema(request=ApiTokenCreateSerializer, responses={201: NewApiTokenSerializer}),
    destroy=extend_schema(responses={204: None}),
)
class ApiTokenViewSet(viewsets.ViewSet):
    """`tokens[/<token_id>]`: the caller's own API tokens (no workspace)."""

    lookup_field = "token_id"
    lookup_value_converter = "int"

    def list(self, request) -> Response:
        return Response(ApiTokenSerializer(api_tokens_of(request.user), many=True).data)

    def create(self, request) -> Response:
        body = ApiTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, value = do_create_api_token(
            Actor.from_request(request), request.user, body.validated_data.get("expires_in_days")
        )
        token.value = value  # on this response only
        return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, token_id: int) -> Response:
        do_revoke_api_token(Actor.from_request(request), request.user, token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
