"""One error shape for the whole API: OpenAI's `{"error": {"message", "type", "param", "code"}}`.

OpenAI's SDKs pick their exception class from the status code and read this body, so every route
answers this way; `code` carries the seeds' codes (MODEL_NOT_FOUND, INFERENCE_TIMEOUT...). Messages
are one line and never hold a traceback or an absolute path.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from core.errors import ForgeflowError
from core.paths import scrub_paths
from core.serving.base import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {
    400: "INVALID_INPUT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "REQUEST_TOO_LARGE",
    422: "INVALID_INPUT",
    503: "SERVICE_UNAVAILABLE",
    504: "INFERENCE_TIMEOUT",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorReply(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


# what every router declares: validation errors are 400s in this shape, not FastAPI's own 422
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorReply,
        "description": "The request cannot be served as sent (OpenAI's error shape)",
    },
    "5XX": {"model": ErrorReply, "description": "The model or its backend failed, or did not answer in time"},
}


class ApiError(Exception):
    """An error to answer with: status, one-line message, optional param and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or _CODES.get(status, "ERROR")
        self.headers = headers


def scrub(message: str) -> str:
    """First line only, absolute paths reduced to their last component."""
    line = message.strip().splitlines()[0] if message.strip() else "error"
    return scrub_paths(line)[:2000]


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    detail = ErrorDetail(message=scrub(message), type=kind, param=param, code=code or _CODES.get(status))
    return ErrorReply(error=detail).model_dump()


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


# pydantic names the member of a union (`str | list[str]`) a value failed in the error's location:
# `constrained-str`, `list[constrained-str]`, `TextPart`; field names are snake_case, so these stand out
_UNION_MEMBER = re.compile(r"[\[\]-]|^[A-Z]|^(str|int|float|bool|list|dict)$")


def param_of(error: dict[str, Any]) -> list[str]:
    """The error's location as the client wrote it: no `body.` prefix, no union member names."""
    loc = [str(p) for p in error.get("loc", ())]
    if loc[:1] and loc[0] in ("body", "query", "path", "header", "cookie"):  # not a field named `path`
        loc = loc[1:]
    return [p for p in loc if not _UNION_MEMBER.search(p)]


def first_error(errors: list[Any]) -> dict[str, Any]:
    """The error to report: the first, or for a union the member the value was meant for.

    A value that fails every member of `str | list[str]` gets one error per member; the one that is not
    about the value's JSON type (`string_type`, `list_type`...) says what is wrong with it.
    """
    if not errors:
        return {"loc": (), "msg": "invalid request"}
    head: dict[str, Any] = errors[0]
    same = [e for e in errors if param_of(e)[:1] == param_of(head)[:1]]
    return next((e for e in same if not str(e.get("type", "")).endswith("_type")), head)


def allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for this path (Starlette's 405 names one route's only)."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods |= {m.upper() for m in operations}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))  # Starlette answers HEAD as GET


def from_exception(exc: BaseException) -> ApiError:
    """The ApiError for any exception a route can raise (unknown ones become an opaque 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the model did not answer in time", code="INFERENCE_TIMEOUT")
    if isinstance(exc, BackendUnavailable):
        return ApiError(503, str(exc), code=exc.code, headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, BackendError):
        return ApiError(exc.status, str(exc), code=exc.code)
    if isinstance(exc, ForgeflowError):  # InputError and friends may carry their own status and code
        return ApiError(int(getattr(exc, "status", 400)), str(exc), code=getattr(exc, "code", None))
    log.error("internal error", exc_info=exc)
    return ApiError(500, "internal error: see the server log", code="INTERNAL_ERROR")


def install(app: FastAPI) -> None:
    """Register handlers so every error leaves in the one shape."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        err = from_exception(exc)
        return error_response(err.status, err.message, param=err.param, code=err.code, headers=err.headers)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            message = f"{request.method} is not served here: use {', '.join(allowed)}"
            headers = (headers or {}) | {"Allow": ", ".join(allowed)}
        return error_response(exc.status_code, message, headers=headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = first_error(list(exc.errors()))
        param = ".".join(param_of(first)) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(400, f"{param}: {msg}" if param else msg, param=param, code="INVALID_INPUT")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ForgeflowError, on_api_error)
    app.add_exception_handler(TimeoutError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_api_error)
