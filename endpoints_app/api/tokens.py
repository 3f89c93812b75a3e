"""`/api/v1/tokens`: the caller's own API tokens."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.services.audit import Actor
from endpoints_app.services.tokens import do_create_api_token, do_revoke_api_token, tokens_of


class ApiTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prefix = serializers.CharField()
    created = serializers.DateTimeField()
    last_used = serializers.DateTimeField(allow_null=True)
    expires = serializers.DateTimeField(source="expiry", allow_null=True)


class NewApiTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(source="value", help_text="The token itself: shown once, never again.")


class ApiTokenCreateSerializer(serializers.Serializer):
    expires_in_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3650)


@extend_schema(methods=["GET"], responses=ApiTokenSerializer(many=True))
@extend_schema(methods=["POST"], request=ApiTokenCreateSerializer, responses={201: NewApiTokenSerializer})
@api_view(["GET", "POST"])
def tokens(request):
    if request.method == "GET":
        return Response(ApiTokenSerializer(tokens_of(request.user), many=True).data)
    body = ApiTokenCreateSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    token, value = do_create_api_token(
        Actor.from_request(request), request.user, body.validated_data.get("expires_in_days")
    )
    token.value = value  # on this response only
    return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)


@extend_schema(methods=["DELETE"], responses={204: None})
@api_view(["DELETE"])
def token(request, token_id: int):
    do_revoke_api_token(Actor.from_request(request), request.user, token_id)
    return Response(status=status.HTTP_204_NO_CONTENT)
