"""What the client raises: :class:`ApiError` (the gateway answered with a problem) and
:class:`NetworkError` (no answer), both :class:`CofounderError`."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "CofounderError", "NetworkError"]


class CofounderError(Exception):
    """Any failure of a call to the gateway."""

    def problem(self) -> dict[str, Any]:
        """The failure as an RFC 9457 problem object (``type``, ``title``, ``status``,
        ``detail``, and whatever else it carries): what ``cofounder ... --json`` prints."""
        raise NotImplementedError


class ApiError(CofounderError):
    """The gateway refused the request: an ``application/problem+json`` answer (RFC 9457).

    ``type`` is the stable code to branch on (``build_not_found``, ``too_many_active_builds``,
    ...); ``extra`` holds the fields some problems add (``limit`` and ``active``, ``errors``,
    ...). An error answer that is no problem object (a proxy's HTML page, say) gets the type
    ``http_error`` and its text as the detail; so does an answer that is no error but not what
    the gateway sends either (a redirect, a captive portal's page in place of JSON).
    """

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {type}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.extra: dict[str, Any] = dict(extra or {})
        #: The response's headers (``Retry-After`` of a 429, ...).
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def errors(self) -> list[dict[str, Any]]:
        """A 422's refused inputs (``field``, ``in``, ``message``, ``kind``); empty otherwise."""
        found = self.extra.get("errors")
        return list(found) if isinstance(found, list) else []

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before trying again (a 429's ``Retry-After``), when given."""
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def problem(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    @classmethod
    def from_response(
        cls, status: int, body: bytes, content_type: str, headers: dict[str, str]
    ) -> ApiError:
        """The error of an error response: its problem object, else a stand-in."""
        import json

        problem: Any = None
        if "json" in content_type:
            try:
                problem = json.loads(body)
            except ValueError:
                problem = None
        if not isinstance(problem, dict) or not isinstance(problem.get("type"), str):
            text = body.decode(errors="replace").strip()
            return cls(
                status, "http_error", "HTTP error", text[:500] or f"HTTP {status}", headers=headers
            )
        known = {"type", "title", "status", "detail"}
        return cls(
            status,
            problem["type"],
            str(problem.get("title", "")),
            str(problem.get("detail", "")),
            extra={k: v for k, v in problem.items() if k not in known},
            headers=headers,
        )


class NetworkError(CofounderError):
    """No answer from the gateway: it cannot be reached, or the connection broke (a cut event
    stream, a timeout)."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the gateway at {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason

    def problem(self) -> dict[str, Any]:
        """A problem object of the client's own (``status`` is null: no HTTP answer)."""
        return {
            "type": "gateway_unreachable",
            "title": "Gateway unreachable",
            "status": None,
            "detail": str(self),
        }
