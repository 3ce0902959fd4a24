from __future__ import annotations

from services.api.metrics import ApiMetrics


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = ApiMetrics(), ApiMetrics()
    one.events.labels("stored").inc(3)
    assert b'qbo_api_events_projected_total{outcome="stored"} 3.0' in one.render()
    assert b'qbo_api_events_projected_total{outcome="stored"} 0.0' in two.render()


def test_projection_outcomes_are_exported_from_the_start() -> None:
    text = ApiMetrics().render()
    for outcome in ("stored", "stale", "dead_lettered"):
        assert f'qbo_api_events_projected_total{{outcome="{outcome}"}} 0.0'.encode() in text
