"""The model endpoints under ``/v1/`` (generate, variations, interpolate, edit, postprocess,
style, animate)."""

from __future__ import annotations

from fastapi import APIRouter

from avatarforge.serve.state import ServeState

__all__ = ["build_router"]


def build_router(state: ServeState) -> APIRouter:
    """All ``/v1/`` model routes bound to ``state``."""
    router = APIRouter()
    return router
