"""A receipt as an agent reads it: the verdict, the outcome, the rules
and their reasons, the raw ledger entry (spec §4, §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A rule that fired: its id, effect (`block`, `escalate`, `pass`),
    reason and, when the policy gives one, remediation."""

    id: str
    effect: str
    reason: str
    remediation: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A ledger entry's receipt."""

    entry: dict[str, Any]
    """The whole ledger entry, as the gateway answered it."""
    replayed: bool = False
    """Whether the gateway answered a decision it had made before."""
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def from_entry(cls, entry: dict[str, Any], replayed: bool = False) -> Receipt:
        decision = entry.get("receipt", {}).get("decision") or {}
        rules = [
            Rule(r["id"], r["effect"], r["reason"], r.get("remediation"))
            for r in decision.get("rules", [])
        ]
        return cls(entry=entry, replayed=replayed, rules=rules)

    def __str__(self) -> str:
        lines = [f"{self.kind} {self.verdict or '-'} {self.outcome} {self.receipt_id}"]
        lines += [f"  {r.effect} {r.id}: {r.reason}" for r in self.rules]
        return "\n".join(lines)

    @property
    def receipt(self) -> dict[str, Any]:
        """The signed receipt."""
        value: dict[str, Any] = self.entry["receipt"]
        return value

    @property
    def receipt_id(self) -> str:
        return str(self.receipt["receipt_id"])

    @property
    def intent_id(self) -> str:
        """The intent's id: a decision's from its intent; others' from the
        entry the client asked for (empty when unknown)."""
        payload = self.receipt.get("subject", {}).get("payload", {})
        return str(payload.get("intent_id", self.entry.get("intent_id", "")))

    @property
    def kind(self) -> str:
        return str(self.receipt["kind"])

    @property
    def seq(self) -> int:
        return int(self.entry["seq"])

    @property
    def verdict(self) -> str | None:
        """`pass`, `block` or `escalate` (decisions and executions)."""
        decision = self.receipt.get("decision")
        return None if decision is None else str(decision["verdict"])

    @property
    def outcome(self) -> str:
        """The outcome's status: `committed`, `failed`, `unknown`,
        `not_executed`, `pending_approval`, `approved`, `denied`, …"""
        return str(self.receipt["outcome"]["status"])

    @property
    def policy_version(self) -> str:
        return str(self.receipt.get("policy_version", ""))
