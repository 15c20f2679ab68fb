#!/usr/bin/env python3
"""Prints the RDS IAM auth token botocore makes for fixed inputs and a frozen clock: the test
vector of shared/aws/src/rds_iam.rs. Run with any Python that has botocore, e.g.
`.venv-infra/bin/python scripts/rds-token-vector.py`."""
import datetime
from unittest import mock

import botocore.auth
import botocore.session

FROZEN = datetime.datetime(2025, 12, 2, 0, 0, 0)

session = botocore.session.get_session()
session.set_credentials(
    "AKIDEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "session/token+with=reserved",
)
client = session.create_client("rds", region_name="eu-west-1")
# Freeze every clock botocore signs with (the pure-Python signer and, when awscrt is
# installed, the CRT one).
import sys  # noqa: E402

patches = [
    mock.patch.object(m, "get_current_datetime", return_value=FROZEN)
    for m in list(sys.modules.values())
    if getattr(m, "__name__", "").startswith("botocore") and hasattr(m, "get_current_datetime")
]
for p in patches:
    p.start()
if True:
    print(
        client.generate_db_auth_token(
            DBHostname="mydb.cluster-abc.eu-west-1.rds.amazonaws.com",
            Port=5432,
            DBUsername="iam_loader",
            Region="eu-west-1",
        )
    )
