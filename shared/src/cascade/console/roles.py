"""Who may do what in the console on Cloud Run: the HTTP functions' invoker lists.

Each console action needs one role, and a role's members are the IAM members Terraform
already grants the matching HTTP function (``infra/console.tf`` passes the same lists to
the service as ``CASCADE_CONSOLE_ROLES``):

========  ===========================================  ==========================
role      actions                                      members (Terraform)
========  ===========================================  ==========================
retrain   retrain                                      ``train_http_invokers``
bless     force-bless                                  ``bless_http_invokers``
review    release, discard, save a schema              ``review_http_invokers``
deploy    rollback, promote                            ``deploy_approvers``
========  ===========================================  ==========================

A member matches the verified IAP identity as IAM would: ``user:`` and
``serviceAccount:`` by email (case-insensitive), ``domain:`` by the identity's Google
Workspace domain (the assertion's ``hd`` claim, not the email's suffix: an unmanaged
account may carry any address). ``group:`` members never match: expanding a group needs
the Cloud Identity API and a Workspace admin grant the console's account does not have,
so a group listed for a role reaches the console (IAP expands groups) but acts through it
only once its members are listed themselves; the refusal says so.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "ROLE_VARIABLES",
    "Identity",
    "Role",
    "RoleMembers",
    "role_of_action",
]


class Role(StrEnum):
    RETRAIN = "retrain"
    BLESS = "bless"
    REVIEW = "review"
    DEPLOY = "deploy"


ROLE_VARIABLES = {
    Role.RETRAIN: "train_http_invokers",
    Role.BLESS: "bless_http_invokers",
    Role.REVIEW: "review_http_invokers",
    Role.DEPLOY: "deploy_approvers",
}
"""The Terraform variable that lists each role's members (what a refusal names)."""

Member = Annotated[str, StringConstraints(max_length=320, pattern=r"^[A-Za-z]+:[^\s]+$")]
MAX_MEMBERS = 500


class Identity(BaseModel):
    """The signed-in caller, from a verified IAP assertion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str
    hosted_domain: str | None = None


def _domain(value: str) -> str:
    return value.strip().lower()


class RoleMembers(BaseModel):
    """Each role's IAM members, as Terraform passes them (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrain: tuple[Member, ...] = Field(default=(), max_length=MAX_MEMBERS)
    bless: tuple[Member, ...] = Field(default=(), max_length=MAX_MEMBERS)
    review: tuple[Member, ...] = Field(default=(), max_length=MAX_MEMBERS)
    deploy: tuple[Member, ...] = Field(default=(), max_length=MAX_MEMBERS)

    def members(self, role: Role) -> tuple[str, ...]:
        members: tuple[str, ...] = getattr(self, role.value)
        return members

    def roles_of(self, identity: Identity) -> frozenset[Role]:
        """The roles one of whose members is ``identity`` (never through a group)."""
        return frozenset(
            role
            for role in Role
            if any(_matches(member, identity) for member in self.members(role))
        )

    def groups_of(self, role: Role) -> tuple[str, ...]:
        """The role's ``group:`` members, which the console cannot expand."""
        return tuple(m for m in self.members(role) if m.lower().startswith("group:"))


def _matches(member: str, identity: Identity) -> bool:
    kind, _, value = member.partition(":")
    kind = kind.lower()
    if kind in ("user", "serviceaccount"):
        return value.strip().lower() == identity.email.strip().lower()
    if kind == "domain":
        return identity.hosted_domain is not None and _domain(value) == _domain(
            identity.hosted_domain
        )
    return False  # group:, deleted:, principal:// and anything else: never


# Every console route that acts (POST), and the role it needs. A POST that is not listed
# needs every role (``role_of_action`` answers None): a new action is closed until it is
# named here.
_ACTIONS: tuple[tuple[re.Pattern[str], Role], ...] = (
    (re.compile(r"/datasets/[^/]+/retrain"), Role.RETRAIN),
    (re.compile(r"/runs/[^/]+/bless"), Role.BLESS),
    (re.compile(r"/datasets/[^/]+/quarantine/[^/]+/(release|discard)"), Role.REVIEW),
    (re.compile(r"/datasets/[^/]+/schema"), Role.REVIEW),
    (re.compile(r"/models/[^/]+/(rollback|promote)"), Role.DEPLOY),
)


def role_of_action(path: str) -> Role | None:
    """The role an action at ``path`` needs; None when the path is no known action."""
    for pattern, role in _ACTIONS:
        if pattern.fullmatch(path):
            return role
    return None
