"""Google's OAuth 2.0 as the Drive sim answers it: consent, ``/token``, bearer tokens.

- ``GET /o/oauth2/auth``: consents at once as the default user (``login_hint`` picks another)
  and redirects to ``redirect_uri?code=..&state=..``; the out-of-band redirect shows the code.
- ``POST /token``: ``authorization_code``, ``refresh_token`` and the service-account JWT grant
  (``urn:ietf:params:oauth:grant-type:jwt-bearer``; RS256 checked with ``cryptography`` when it
  imports). Errors are Google's ``{"error", "error_description"}``.
- Access tokens last an hour; ``expire`` ends them early so a test sees the client refresh.

Service accounts are principals of their own; the API refuses to let them own files (see api.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
OOB = "urn:ietf:wg:oauth:2.0:oob"
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
TOKEN_SECONDS = 3600
CODE_SECONDS = 600


@dataclass(frozen=True)
class Principal:
    email: str
    service: bool = False  # a service account


@dataclass(frozen=True)
class _Access:
    principal: Principal
    expires: float
    scope: str


@dataclass(frozen=True)
class _Grant:
    """A refresh token or an authorization code."""

    user: str
    client_id: str
    scope: str
    redirect_uri: str = ""
    expires: float = float("inf")


class TokenError(Exception):
    """A ``/token`` or consent failure: ``status`` and Google's ``error`` code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class Auth:
    def __init__(self, clients: dict[str, str], default_user: str) -> None:
        self.clients = dict(clients)  # client_id -> client_secret
        self.default_user = default_user
        self.token_uri = ""  # set once the server knows its port
        self._lock = threading.Lock()
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Grant] = {}
        self._codes: dict[str, _Grant] = {}
        self._service_keys: dict[str, bytes] = {}  # client_email -> public key PEM

    # -- issuing ----------------------------------------------------------------------------

    def issue_access(self, principal: Principal, scope: str = DRIVE_SCOPE) -> str:
        token = "ya29.sim-" + secrets.token_urlsafe(32)
        with self._lock:
            self._access[token] = _Access(principal, time.time() + TOKEN_SECONDS, scope)
        return token

    def issue_refresh(self, user: str, client_id: str, scope: str = DRIVE_SCOPE) -> str:
        token = "1//sim-" + secrets.token_urlsafe(32)
        with self._lock:
            self._refresh[token] = _Grant(user, client_id, scope)
        return token

    def register_service_account(self, email: str, public_pem: bytes) -> None:
        with self._lock:
            self._service_keys[email] = public_pem

    def expire(self, email: str | None = None) -> None:
        """End the access tokens of ``email`` (every principal's when None) now."""
        with self._lock:
            for token, a in list(self._access.items()):
                if email is None or a.principal.email.lower() == email.lower():
                    self._access[token] = _Access(a.principal, 0.0, a.scope)

    def revoke(self, token: str) -> bool:
        with self._lock:
            return (self._access.pop(token, None) or self._refresh.pop(token, None)) is not None

    # -- checking ---------------------------------------------------------------------------

    def principal(self, authorization: str | None) -> Principal | None:
        """Who ``Authorization: Bearer <token>`` is; None when missing, unknown or expired."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            a = self._access.get(token.strip())
        return a.principal if a is not None and a.expires > time.time() else None

    def token_info(self, token: str) -> dict[str, Any]:
        with self._lock:
            a = self._access.get(token)
        if a is None or a.expires <= time.time():
            raise TokenError(400, "invalid_token", "Invalid Value")
        return {
            "email": a.principal.email,
            "scope": a.scope,
            "expires_in": int(a.expires - time.time()),
            "access_type": "offline",
        }

    # -- consent ----------------------------------------------------------------------------

    def consent(self, params: dict[str, str]) -> str:
        """The URL to redirect to (``redirect_uri`` with ``code`` and ``state``), or, for the
        out-of-band flow, ``oob:<code>``."""
        client_id = params.get("client_id", "")
        if client_id not in self.clients:
            raise TokenError(400, "invalid_client", f"The OAuth client was not found: {client_id}")
        redirect = params.get("redirect_uri", "")
        if not redirect:
            raise TokenError(400, "invalid_request", "Missing required parameter: redirect_uri")
        if params.get("response_type", "code") != "code":
            raise TokenError(400, "unsupported_response_type", "response_type must be code")
        user = params.get("login_hint") or self.default_user
        code = "4/sim-" + secrets.token_urlsafe(24)
        grant = _Grant(user, client_id, params.get("scope", DRIVE_SCOPE), redirect,
                       time.time() + CODE_SECONDS)  # fmt: skip
        with self._lock:
            self._codes[code] = grant
        if redirect == OOB:
            return f"oob:{code}"
        query = {"code": code, "scope": grant.scope}
        if "state" in params:
            query["state"] = params["state"]
        return f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(query)}"

    # -- the token endpoint -----------------------------------------------------------------

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        kind = form.get("grant_type", "")
        if kind == JWT_GRANT:
            return self._jwt_grant(form.get("assertion", ""))
        client_id = form.get("client_id", "")
        if self.clients.get(client_id) != form.get("client_secret") or not client_id:
            raise TokenError(401, "invalid_client", "Unauthorized")
        if kind == "refresh_token":
            with self._lock:
                g = self._refresh.get(form.get("refresh_token", ""))
            if g is None or g.client_id != client_id:
                raise TokenError(400, "invalid_grant", "Token has been expired or revoked.")
            return self._answer(Principal(g.user), g.scope)
        if kind == "authorization_code":
            with self._lock:
                g = self._codes.pop(form.get("code", ""), None)  # a code works once
            if g is None or g.client_id != client_id or g.expires < time.time():
                raise TokenError(400, "invalid_grant", "Malformed auth code.")
            if form.get("redirect_uri", "") != g.redirect_uri:
                raise TokenError(400, "redirect_uri_mismatch", "Bad Request")
            answer = self._answer(Principal(g.user), g.scope)
            answer["refresh_token"] = self.issue_refresh(g.user, client_id, g.scope)
            return answer
        raise TokenError(400, "unsupported_grant_type", f"Invalid grant_type: {kind}")

    def _answer(self, principal: Principal, scope: str) -> dict[str, Any]:
        return {
            "access_token": self.issue_access(principal, scope),
            "expires_in": TOKEN_SECONDS - 1,
            "scope": scope,
            "token_type": "Bearer",
        }

    def _jwt_grant(self, assertion: str) -> dict[str, Any]:
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(body_b64))
            signature = _unb64(sig_b64)
        except ValueError as e:
            raise TokenError(400, "invalid_grant", "Invalid JWT Signature.") from e
        iss = str(claims.get("iss", ""))
        with self._lock:
            public_pem = self._service_keys.get(iss)
        if public_pem is None:
            raise TokenError(400, "invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or not _signature_ok(
            public_pem, f"{head_b64}.{body_b64}".encode(), signature
        ):
            raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if claims.get("aud") != self.token_uri:
            raise TokenError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived "
                             "token and in a reasonable timeframe (bad audience)")  # fmt: skip
        if not float(claims.get("iat", 0)) - 300 <= now <= float(claims.get("exp", 0)) + 300:
            raise TokenError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived "
                             "token (60 minutes) and in a reasonable timeframe.")  # fmt: skip
        if claims.get("sub") and claims["sub"] != iss:
            # domain-wide delegation needs a Workspace admin; a personal account has none
            raise TokenError(401, "unauthorized_client", "Client is unauthorized to retrieve "
                             "access tokens using this method, or client not authorized for any "
                             "of the scopes requested.")  # fmt: skip
        scope = str(claims.get("scope", DRIVE_SCOPE))
        return {
            "access_token": self.issue_access(Principal(iss, service=True), scope),
            "expires_in": TOKEN_SECONDS - 1,
            "token_type": "Bearer",
        }


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature_ok(public_pem: bytes, signed: bytes, signature: bytes) -> bool:
    """RS256 check; without ``cryptography`` the sim trusts the decoded claims."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError:
        return True
    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def new_service_account_key(project: str, token_uri: str) -> tuple[dict[str, Any], bytes]:
    """A service-account key JSON as the Cloud console writes it, and its public key PEM."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as e:
        raise RuntimeError("service-account keys need `cryptography` (pip install it)") from e
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    name = f"sa-{secrets.token_hex(4)}"
    email = f"{name}@{project}.iam.gserviceaccount.com"
    client_id = str(secrets.randbelow(10**20))
    root = token_uri.rsplit("/", 1)[0]
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem.decode(),
        "client_email": email,
        "client_id": client_id,
        "auth_uri": f"{root}/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": f"{root}/oauth2/v1/certs",
        "client_x509_cert_url": f"{root}/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }, public_pem
