"""What the RPC handlers share: the error they raise and the web URLs they hand out."""

from __future__ import annotations

# Kaggle answers with web URLs on www.kaggle.com (reference §1.4); clients only print them.
WEB = "https://www.kaggle.com"


class RpcError(Exception):
    """An error answered as HTTP ``code`` with ``{"code": code, "message": message}``.

    kagglesdk raises ``HTTPError`` for either the status or the body code (`_prepare_response`,
    kaggle_http_client.py), and the CLI prints ``format_http_error`` (404: "Not found").
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_ref(ref: str) -> tuple[str, str, int | None]:
    """ "owner/slug", "owner/slug/N" or "owner/slug/versions/N" -> (owner, slug, version)."""
    parts = [p for p in ref.strip().split("/") if p]
    if len(parts) < 2:
        raise RpcError(400, f"invalid reference {ref!r}: expected owner/slug")
    version: int | None = None
    tail = parts[2:]
    if tail and tail[0] == "versions":
        tail = tail[1:]
    if tail:
        try:
            version = int(tail[0].lstrip("v"))
        except ValueError as e:
            raise RpcError(400, f"invalid version in {ref!r}") from e
    return parts[0], parts[1], version
