"""ListDestinations: each destination with its URL (never a credential), whether it
answers (and why not), and what it holds; over gRPC, the SDK, REST and backupctl."""

from __future__ import annotations

import json

from pgbackup_client.cli import main as backupctl

from .helpers import BAD_SECRET, bad_credentials, s3_entry


def test_destinations_say_which_answer_and_why_not_without_secrets(start_with, s3, s3_env,
                                                                  tmp_path, capsys):
    bucket = s3.make_bucket()
    app = start_with([
        {"name": "local", "url": (tmp_path / "local").as_uri()},
        s3_entry(s3, "offsite", f"{bucket}/pg", required=False),
        s3_entry(s3, "nobucket", "no-such-bucket-here/pg", required=False),
        bad_credentials(s3_entry(s3, "badkey", f"{bucket}/pg", required=False)),
    ], envoy=True)
    found = {d.name: d for d in app.client().list_destinations()}
    assert list(found) == ["local", "offsite", "nobucket", "badkey"]
    assert found["local"].reachable and found["offsite"].reachable
    assert found["offsite"].url == f"s3://{bucket}/pg" and found["offsite"].required is False
    assert found["local"].required is True
    assert not found["nobucket"].reachable
    assert 'bucket "no-such-bucket-here" does not exist' in found["nobucket"].error
    assert not found["badkey"].reachable and "access key" in found["badkey"].error
    assert found["offsite"].copies == 0 and found["offsite"].newest is None

    status, body = app.rest("GET", "/api/v1/destinations")
    assert status == 200, body
    assert [d["name"] for d in body["destinations"]] == list(found)
    text = json.dumps(body)
    for secret in s3_env.values():
        assert secret not in text
    assert BAD_SECRET not in text

    code = backupctl(["--address", app.grpc_address, "destinations"])
    out = capsys.readouterr()
    assert code == 1  # some destination does not answer
    assert "offsite" in out.out and "does not exist" in out.out
    assert all(secret not in out.out + out.err for secret in s3_env.values())
