"""The reference flow (flows/text_curation.py), unchanged, except that its Ray job's workers reach
S3 at this process's ``AWS_ENDPOINT_URL``.

The session's Ray workers were started with the test server's endpoint in their environment; the
listing test puts a request-counting proxy in front of that server and points this process at
it. The job's runtime env carries the proxy's endpoint to the workers, so every S3 request of the
run (the flow process's and the stage tasks') passes the proxy. The endpoint is not a
credential and not a stage parameter: fingerprints are the reference flow's own.

Run: ``python tests/scripts/s3_listing_flow.py --input s3://... --output ... --work-dir ...``
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import flows.text_curation as reference  # noqa: E402
from curator_stages.orchestration.flow_script import curation_flow, run_flow_script  # noqa: E402

_runtime_env = reference.SPEC.runtime_env


def _with_endpoint(params):
    env = dict(_runtime_env(params) or {})
    env["env_vars"] = {**env.get("env_vars", {}), "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"]}
    return env


SPEC = dataclasses.replace(reference.SPEC, runtime_env=_with_endpoint)
text_curation = curation_flow(SPEC)

if __name__ == "__main__":
    run_flow_script(SPEC, text_curation)
