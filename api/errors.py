"""One error shape for the whole API: OpenAI's `{"error": {"message", "type", "param", "code"}}`.

OpenAI's SDKs pick their exception class from the status code and read this body, so every route
answers this way; `code` carries the seeds' codes (MODEL_NOT_FOUND, INFERENCE_TIMEOUT...). Messages
are one line and never hold a traceback or an absolute path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

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
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(400, f"{param}: {msg}" if param else msg, param=param, code="INVALID_INPUT")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ForgeflowError, on_api_error)
    app.add_exception_handler(TimeoutError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_api_error)
