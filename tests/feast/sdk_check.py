"""Drives Feast's own Python SDK (0.67) against a running `wafer serve`.

Run by tests/feast_sdk.rs: argv is the Feast repo directory (holding
feature_store.yaml, with the remote online store pointing at the server),
the Parquet file the views read, and a JSON file of expected values. Every
check is an assert; the last line printed is a JSON summary.
"""

import datetime
import json
import sys
import time
from datetime import timedelta

import pandas as pd
import requests
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
)
import feast.errors as errors
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32, Float64, Int64
from feast.value_type import ValueType

repo, parquet, expected_file = sys.argv[1], sys.argv[2], sys.argv[3]
expected = json.load(open(expected_file))

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(
    name="driver_stats_source",
    path=parquet,
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
push = PushSource(name="driver_stats_push", batch_source=source)
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
    ],
    online=True,
    source=push,
)
scoring_request = RequestSource(
    name="scoring_request", schema=[Field(name="val_to_add", dtype=Int64)]
)


@on_demand_feature_view(
    sources=[driver_hourly_stats, scoring_request],
    schema=[Field(name="conv_rate_plus_val", dtype=Float64)],
)
def scored(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["conv_rate_plus_val"] = inputs["conv_rate"] + inputs["val_to_add"]
    return out


driver_activity = FeatureService(name="driver_activity", features=[driver_hourly_stats])
scoring = FeatureService(
    name="scoring", features=[driver_hourly_stats[["conv_rate"]], scored]
)

store = FeatureStore(repo_path=repo)
store.apply([driver, source, push, driver_hourly_stats, scoring_request, scored,
             driver_activity, scoring])
server = store.config.online_store.path
summary = {}


def online(features, rows, full=False):
    return store.get_online_features(
        features=features, entity_rows=rows, full_feature_names=full
    ).to_dict()


# Lookups: what materialization wrote, missing entities as None.
known, unknown = expected["known"], expected["unknown"]
got = online(
    ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:conv_rate"],
    [{"driver_id": known}, {"driver_id": unknown}],
)
assert got["avg_daily_trips"] == [expected["trips"], None], got
summary["lookup"] = got

# write_to_online_store, then a lookup that sees it.
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
df = pd.DataFrame(
    {
        "driver_id": [known],
        "conv_rate": [0.125],
        "acc_rate": [0.5],
        "avg_daily_trips": [7],
        "event_timestamp": [now],
        "created": [now],
    }
)
store.write_to_online_store("driver_hourly_stats", df)
got = online(["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
             [{"driver_id": known}])
assert got["conv_rate"] == [0.125] and got["avg_daily_trips"] == [7], got

# push to online (resolved to the view by the SDK, sent per view).
df["conv_rate"] = [0.25]
df["event_timestamp"] = [now + timedelta(seconds=1)]
store.push("driver_stats_push", df)
got = online(["driver_hourly_stats:conv_rate"], [{"driver_id": known}])
assert got["conv_rate"] == [0.25], got

# A service with an on-demand view, full feature names.
got = online(store.get_feature_service("scoring"),
             [{"driver_id": known, "val_to_add": 2}], full=True)
assert got["driver_hourly_stats__conv_rate"] == [0.25], got
assert got["scored__conv_rate_plus_val"] == [2.25], got
summary["service"] = got

# Each error raised as Feast's own type, with the server's message.
def raise_detail(response):
    assert response.status_code >= 400, response.text
    error = errors.FeastError.from_error_detail(response.json())
    assert error is not None, response.text
    raise error


def raises(kind, call, text=None):
    try:
        call()
    except kind as e:
        assert text is None or text in str(e), (kind, str(e))
        return type(e).__name__
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {kind.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"expected {kind.__name__}, nothing raised")


summary["errors"] = [
    raises(errors.FeatureViewNotFoundException,
           lambda: online(["nope:conv_rate"], [{"driver_id": known}]),
           "unknown feature view 'nope'"),
    raises(errors.RequestDataNotFoundInEntityRowsException,
           lambda: online(["scored:conv_rate_plus_val"], [{"driver_id": known}]),
           "missing request data 'val_to_add'"),
    # A service the server does not have (the SDK's registry has not
    # either, but a FeatureService object goes to the server by name).
    raises(errors.FeatureServiceNotFoundException,
           lambda: online(FeatureService(name="nope", features=[driver_hourly_stats]),
                          [{"driver_id": known}]),
           "unknown feature service 'nope'"),
    # The SDK resolves push sources itself; the server's own answer to an
    # unknown one, read as the SDK reads error bodies.
    raises(errors.PushSourceNotFoundException,
           lambda: raise_detail(requests.post(f"{server}/push", json={
               "push_source_name": "nope_push", "df": {"driver_id": [known]}})),
           "unknown push source 'nope_push'"),
]

# Async materialization, as Feast's server has it.
answer = requests.post(f"{server}/materialize-incremental?async=true",
                       json={"end_ts": datetime.datetime.now(datetime.timezone.utc).isoformat()})
assert answer.status_code == 202, answer.text
assert answer.json() == {"status": "accepted", "feature_views": ["driver_hourly_stats"]}, answer.text
deadline = time.time() + 300
while True:
    view = requests.get(f"{server}/registry/feature-views/driver_hourly_stats").json()
    end = pd.Timestamp(view["last_materialization"]["end"])
    if view["state"] == "AVAILABLE_ONLINE" and end > pd.Timestamp(expected["materialized_until"]):
        break
    assert time.time() < deadline, view
    time.sleep(0.05)
summary["async"] = answer.json()

print(json.dumps(summary))
