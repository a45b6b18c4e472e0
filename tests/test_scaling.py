"""How many trials run at once, and what a study asks a cluster's autoscaler for."""

import json

import pytest
import ray

from depthlab.study import DRIVER_RESOURCE, _resources, request_nodes


@pytest.fixture
def two_cpu_ray(isolated):
    ray.init(num_cpus=2, resources={DRIVER_RESOURCE: 4}, include_dashboard=False,
             logging_level="ERROR")
    yield
    ray.shutdown()


def _requested() -> list[dict] | None:
    """The standing autoscaler request (v1's KV channel, or v2's cluster constraint)."""
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return [dict(d.bundles_by_count[0].bundle) for d in
                status.resource_demands.cluster_constraint_demand
                for _ in range(d.bundles_by_count[0].count)]
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return None if raw is None else json.loads(raw)


def test_a_local_ray_runs_what_fits_and_asks_no_one(two_cpu_ray):
    assert _resources(1, None)["concurrent"] == 2
    assert _resources(1, None, limit=5)["concurrent"] == 2  # cut to the CPUs
    assert _resources(2, None)["concurrent"] == 1
    with pytest.raises(ValueError, match="no GPU"):
        _resources(1, True)
    with pytest.raises(ValueError, match="3 workers need 3 CPUs"):
        _resources(3, None)
    assert not _requested()


def test_on_a_cluster_what_does_not_fit_is_asked_of_the_autoscaler(two_cpu_ray, capsys):
    scaling = _resources(1, True, limit=3, autoscale=True)  # no GPU node up yet
    assert scaling["concurrent"] == 3 and scaling["gpus_per_worker"] == 1
    assert _requested() == [{"CPU": 1, "GPU": 1}] * 3
    assert "asked the autoscaler for 3 trials x 1 workers" in capsys.readouterr().out
    # more trials than driver slots: the slots cap it, and the request with it
    assert _resources(2, None, limit=9, autoscale=True)["concurrent"] == 4
    assert _requested() == [{"CPU": 1}] * 8
    request_nodes(0, 1, 0)  # a study withdraws its request when it ends
    assert not _requested()
    assert _resources(1, None, limit=2, autoscale=True)["concurrent"] == 2  # fits: no ask
    assert not _requested()
