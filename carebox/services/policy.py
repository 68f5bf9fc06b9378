"""The practice's response policy from the config, and its fingerprint (stored in meta with the
deadlines it computed: another policy means every deadline is computed again). No ORM import:
``carebox open`` checks the fingerprint before SQLAlchemy loads (see store.peek)."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from zoneinfo import ZoneInfo

from carebox.config import DAY_NAMES, PolicyConfig
from carebox.domain.deadlines import Policy

POLICY_META = "policy_fingerprint"


def policy_from_config(cfg: PolicyConfig) -> Policy:
    return Policy(
        response_hours=cfg.response_hours,
        business_hours=cfg.business_span(),
        working_days=frozenset(DAY_NAMES.index(d) for d in cfg.working_days),
        holidays=frozenset(cfg.holidays) if cfg.holidays else frozenset[date](),
        tz=ZoneInfo(cfg.timezone),
        category_hours=dict(cfg.category_hours),
    )


def policy_fingerprint(policy: Policy) -> str:
    data = {
        "h": policy.response_hours,
        "b": [str(t) for t in policy.business_hours] if policy.business_hours else None,
        "w": sorted(policy.working_days),
        "x": sorted(str(d) for d in policy.holidays),
        "z": str(policy.tz),
        "c": sorted(policy.category_hours.items()),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
