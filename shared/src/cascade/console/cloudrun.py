"""The console as a Cloud Run service: ``python -m cascade.console.cloudrun``.

Only the console's container runs this (``shared/Dockerfile.console``): it listens on
``0.0.0.0:$PORT`` because Cloud Run sends requests to the container's port from outside
its network namespace. ``cascade console`` on a laptop stays on 127.0.0.1.

Everything is read from the environment once, here, at the edge: the project's
``CASCADE_*`` settings (``load_settings``) and the console's own ``CASCADE_CONSOLE_*``
(``CloudConsoleSettings``), which ``infra/console.tf`` sets. Every request must carry a
valid IAP assertion (``IapGate``); an action acts as its signed-in caller and needs that
caller's role (``IapCallers``). Rollback and promote act through the deploy step's own
deployer (Vertex AI); a release re-validates with the validate step's code.
"""

from __future__ import annotations

from typing import Annotated

import google.auth.transport.requests
import uvicorn
from pydantic import Field, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp

from cascade.console.app import ConsoleConfig, create_app
from cascade.console.iap import IapCallers, IapGate, IapKeys, IapVerifier
from cascade.console.roles import RoleMembers
from cascade.console.security import SecurityHeaders
from cascade.console.wiring import console_config
from cascade.core.context import StepContext
from cascade.core.settings import Settings, load_settings
from cascade.deploy.deployer import Deployer
from cascade.deploy.deployers import deployer_for

__all__ = ["CloudConsoleSettings", "behind_iap", "cloud_console_app", "main"]

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - Cloud Run's contract; only this container binds it

Audience = Annotated[
    str,
    StringConstraints(
        # IAP on a Cloud Run service; or on a load balancer's backend service (Google's
        # signed-headers page lists both forms).
        pattern=r"^/projects/[0-9]{1,20}/(locations/[a-z0-9-]{1,40}/services/[a-z][a-z0-9-]{0,62}"
        r"|global/backendServices/[0-9]{1,20})$"
    ),
]
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}$")]


class CloudConsoleSettings(BaseSettings):
    """The console service's own settings (``CASCADE_CONSOLE_*``; ``PORT`` from Cloud Run)."""

    model_config = SettingsConfigDict(env_prefix="CASCADE_CONSOLE_", frozen=True, extra="ignore")

    iap_audience: Audience = Field(description="The signed header's expected ``aud``.")
    roles: RoleMembers = Field(description="JSON: each role's IAM members (roles.py).")
    allowed_hosts: list[Host] = Field(min_length=1, description="JSON: the Host names served.")
    port: int = Field(8080, ge=1, le=65535, validation_alias="PORT")


def behind_iap(config: ConsoleConfig, verifier: IapVerifier, members: RoleMembers) -> ASGIApp:
    """``config``'s console acting as IAP's signed-in caller with the roles ``members``
    give it, every request through the IAP gate."""
    config.caller_of = IapCallers(verifier, members)
    return SecurityHeaders(IapGate(create_app(config), verifier))


def cloud_console_app(settings: Settings, console: CloudConsoleSettings, keys: IapKeys) -> ASGIApp:
    """The console over ``settings``' project, behind the IAP gate."""
    verifier = IapVerifier(console.iap_audience, keys)
    callers = IapCallers(verifier, console.roles)
    config = console_config(settings, caller_of=callers)
    config.allowed_hosts = list(console.allowed_hosts)
    config.vertex_tensorboard = settings.vertex_tensorboard
    config.step_context = lambda: StepContext.from_settings(settings)

    def deployer() -> Deployer:
        return deployer_for(StepContext.from_settings(settings))

    config.deployer = deployer
    return behind_iap(config, verifier, console.roles)


def main() -> None:
    """Serve the console on ``0.0.0.0:$PORT`` (Cloud Run's container contract)."""
    console = CloudConsoleSettings()  # read from the environment
    keys = IapKeys(google.auth.transport.requests.Request())
    app = cloud_console_app(load_settings(), console, keys)
    uvicorn.run(app, host=ALL_INTERFACES, port=console.port, log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
