"""contrib/grafana's dashboard against Grafana's own dashboard JSON schema and each panel plugin's
options schema (grafana-foundation-sdk, vendored in tests/data/grafana): no Grafana server can be
installed here, so the schema is the closest a test gets to "it loads" (issue 16)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "tests" / "data" / "grafana"
DASHBOARD = REPO / "contrib" / "grafana" / "gpuconsole-dashboard.json"
SHARING_ENVELOPE = ("__inputs", "__requires", "__elements")  # "export for sharing" keys, read on import


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    return loaded


def plugin_validator(panel_type: str, definition: str) -> jsonschema.Draft7Validator:
    """The panel plugin's `Options` or `FieldConfig` definition, with its siblings for $refs."""
    plugin = schema(panel_type)
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{definition}", "definitions": plugin["definitions"]})


def dashboard_errors(document: dict[str, Any]) -> list[str]:
    """Every schema error of `document`: the dashboard model, then each panel's plugin options."""
    model = {k: v for k, v in document.items() if k not in SHARING_ENVELOPE}
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema("dashboard")).iter_errors(model)]
    for n, panel in enumerate(document.get("panels", [])):
        kind = panel.get("type", "")
        if not (SCHEMAS / f"{kind}.jsonschema.json").exists():
            errors.append(f"panels/{n}: no schema for panel type {kind!r}")
            continue
        errors += [f"panels/{n}/options/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                   for e in plugin_validator(kind, "Options").iter_errors(panel.get("options", {}))]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None and "FieldConfig" in schema(kind)["definitions"]:
            errors += [f"panels/{n}/fieldConfig/defaults/custom: {e.message}"
                       for e in plugin_validator(kind, "FieldConfig").iter_errors(custom)]
    return errors


def test_the_dashboard_is_valid_against_grafanas_schemas() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert dashboard_errors(document) == []
    kinds = {p["type"] for p in document["panels"]}
    assert {"heatmap", "timeseries", "stat"} <= kinds  # the fleet heatmap is there, and checked
    assert document["__inputs"][0]["pluginId"] == "prometheus"  # the import asks for a data source


@pytest.mark.parametrize("breakage", ["unknown top-level key", "panel without type", "bad heatmap option",
                                      "overrides missing"])
def test_the_check_fails_on_a_broken_dashboard(breakage: str) -> None:
    """Negative controls: each breakage is one Grafana's schema rejects, so the check above can fail."""
    document = copy.deepcopy(json.loads(DASHBOARD.read_text()))
    heatmap = next(p for p in document["panels"] if p["type"] == "heatmap")
    if breakage == "unknown top-level key":
        document["panelz"] = []
    elif breakage == "panel without type":
        del document["panels"][0]["type"]
    elif breakage == "bad heatmap option":
        heatmap["options"]["color"]["mode"] = "rainbow"
    else:
        del heatmap["fieldConfig"]["overrides"]
    assert dashboard_errors(document)
