"""Placeholder: filled in shortly."""

from fastapi import APIRouter

from control_api.http.routing import ApiRoute

router = APIRouter(route_class=ApiRoute)
