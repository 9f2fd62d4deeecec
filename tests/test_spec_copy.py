"""The OpenAPI document the fake Runpod validates against is the shared one."""

from __future__ import annotations

from pathlib import Path

import pytest

COPY = Path(__file__).resolve().parent / "data" / "runpod-openapi-v2.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "runpod" / "openapi-v2.json"


@pytest.mark.skipif(not SHARED.exists(), reason="no shared/ beside this checkout to compare")
def test_the_vendored_openapi_document_matches_shared():
    assert COPY.read_bytes() == SHARED.read_bytes()
