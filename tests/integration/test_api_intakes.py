"""Operators see each upload's accounting through the API, for their tenant only."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from bus.tokens import TokenStore
from ops.ingest import ingest
from ops.serving import api_config
from projections.api import create_app
from tests.conftest import REPO

pytestmark = pytest.mark.servers


async def test_upload_accounting_and_rejections_per_tenant(nc, fast_settings, tmp_path):
    a, b = f"ia-{uuid.uuid4().hex[:6]}", f"ib-{uuid.uuid4().hex[:6]}"
    f = tmp_path / "levels.csv"
    f.write_bytes(b"Timestamp;T1\r\n2019-01-01 00:00:00;3,5\r\n2019-01-01 00:05:00;abc\r\n"
                  b"2019-01-01 00:10:00;12,0\r\n2019-01-01 00:15:00;\r\n")
    result = await ingest(fast_settings, f, a, REPO / "tests/mappings/battledim_levels.yaml",
                          process="yes", progress=False)
    intake_id = result.intake.event_id
    store = TokenStore([])
    tok_a, tok_b = store.issue(a, "op-a", ("read",)), store.issue(b, "op-b", ("read",))
    settings = fast_settings.model_copy(update={"tokens_file": tmp_path / "tokens.yaml"})
    store.save(settings.tokens_path)
    with TestClient(create_app(api_config(settings))) as client:
        def get(url, token):
            return client.get(url, headers={"Authorization": f"Bearer {token}"})

        r = get("/v1/intakes", tok_a)
        assert r.status_code == 200, r.text
        (item,) = r.json()["intakes"]
        assert item["intake_id"] == intake_id and item["status"] == "parsed"
        assert item["filename"] == "levels.csv"
        assert (item["values_received"], item["values_accepted"], item["values_rejected"],
                item["values_missing"]) == (4, 1, 2, 1)
        assert item["reasons"] == {"missing": 1, "non_numeric": 1, "out_of_range": 1}

        r = get(f"/v1/intakes/{intake_id}/rejections", tok_a)
        assert r.status_code == 200, r.text
        got = sorted((x["reason"], x["row"], x["raw"]) for x in r.json()["rejections"])
        assert got == [("missing", 5, ""), ("non_numeric", 3, "abc"),
                       ("out_of_range", 4, "12,0")]

        assert get("/v1/intakes", tok_b).json()["intakes"] == []
        r = get(f"/v1/intakes/{intake_id}/rejections", tok_b)
        assert r.status_code == 404 and intake_id in r.json()["detail"]
        assert get("/v1/intakes/1;drop table readings/rejections", tok_a).status_code in (404, 422)
        assert get("/v1/intakes", "wrong").status_code == 403
