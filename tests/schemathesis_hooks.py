"""Loaded by the schemathesis CLI in tests/test_api_fuzz.py (SCHEMATHESIS_HOOKS): SDP offers
are text, sent as they are."""
import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
