"""An S3 API on localhost (moto's server mode) for tests, benchmarks and local trials of the object store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hailuo_pipeline.local_servers import free_port

# moto accepts any credentials; these only keep botocore from looking for real ones
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "hailuo-local", "AWS_SECRET_ACCESS_KEY": "hailuo-local-secret"}


@dataclass
class LocalS3:
    port: int = field(default_factory=free_port)
    region: str = "us-east-1"
    _server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through the standard AWS variables."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region}

    def start(self) -> LocalS3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def create_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
