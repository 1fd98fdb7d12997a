"""Built-in EC2 GPU prices, overridable in `[cloud.aws] prices`.

Linux on-demand list prices in us-east-1, USD per hour, taken from skypilot-org/skypilot-catalog
`catalogs/v8/aws/vms.csv` @ 00148f2a (generated from the AWS Price List API) and corroborated by
dated `dstack offer` outputs (dstackai/dstack#3264, 2025-11-06; #4110, 2026-08-06). Table dated
2026-08-06. Spot prices move hourly: the figures below are typical us-east-1 values from the same
sources and are estimates; a config override wins over both.
"""

from __future__ import annotations

PRICES_AS_OF = "2026-08-06"
PRICES_SOURCE = "skypilot-catalog v8 aws/vms.csv @00148f2a; dstack#3264, dstack#4110"

# type: (GPUs, on-demand $/h, typical spot $/h or None)
ON_DEMAND_USD_PER_HOUR: dict[str, tuple[int, float, float | None]] = {
    "g4dn.xlarge": (1, 0.526, None),
    "g6.xlarge": (1, 0.8048, 0.36),
    "g5.xlarge": (1, 1.006, 0.43),
    "p5.4xlarge": (1, 6.88, None),
    "g6e.16xlarge": (1, 7.57719, None),
    "g6e.12xlarge": (4, 10.49264, None),
    "p4d.24xlarge": (8, 21.957642, 5.33),
    "p4de.24xlarge": (8, 27.44705, None),
    "p5.48xlarge": (8, 55.04, 18.0),
    "p5en.48xlarge": (8, 63.296, 26.9),
}


def price_per_hour(instance_type: str, spot: bool, overrides: dict[str, float]) -> float | None:
    """$/hour for a type: the config override, else the table (spot estimate for spot), else None."""
    if instance_type in overrides:
        return overrides[instance_type]
    row = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if row is None:
        return None
    _gpus, on_demand, spot_price = row
    return spot_price if spot and spot_price is not None else on_demand


def known_types() -> tuple[str, ...]:
    """Types the built-in table prices, cheapest first."""
    return tuple(sorted(ON_DEMAND_USD_PER_HOUR, key=lambda t: ON_DEMAND_USD_PER_HOUR[t][1]))
