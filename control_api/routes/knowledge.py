"""Placeholder: filled in shortly."""

from fastapi import APIRouter

from control_api.http.routing import API_PREFIX, ApiRoute

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute)
