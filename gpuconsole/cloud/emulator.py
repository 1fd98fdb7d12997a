"""A local EC2 for the demo and tests: moto's server on 127.0.0.1 (never the addresses it invents)."""

from __future__ import annotations

import logging
import os
import urllib.request
from typing import Any

from gpuconsole.cloud.ec2 import LOCAL_EMULATOR_KEY, Ec2
from gpuconsole.config import AwsConfig
from gpuconsole.errors import GpuConsoleError
from gpuconsole.model.cloud import Instance

REGION = "us-east-1"
# Cheapest first; all known to moto's describe_instance_types with GpuInfo.
DEMO_TYPES = ("g6.xlarge", "g5.xlarge", "g6e.12xlarge", "p4d.24xlarge")


class Ec2Emulator:
    """moto.server.ThreadedMotoServer on a free loopback port, plus an API client for test set-up."""

    def __init__(self, region: str = REGION) -> None:
        self.region = region
        self.endpoint_url = ""
        self._server: Any = None
        self._ec2: Ec2 | None = None

    def start(self) -> str:
        """Start the server; returns its endpoint URL."""
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise GpuConsoleError("the demo's local EC2 needs moto: pip install 'gpuconsole[demo]'") from None
        # Keys for the emulator only, so botocore can sign; nothing here can reach AWS.
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # moto's backends are process-wide: start every emulator empty.
        reset = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def ec2(self) -> Ec2:
        if self._ec2 is None:
            self._ec2 = Ec2(AwsConfig(region=self.region, endpoint_url=self.endpoint_url))
        return self._ec2

    @property
    def raw(self) -> Any:
        """The boto3 client, for set-up that gpuconsole itself must never do (unmanaged instances)."""
        return self.ec2.client

    def ubuntu_ami(self) -> str:
        images = self.raw.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["ubuntu/images/*"]}]
        )["Images"]
        return str(sorted(images, key=lambda i: str(i["Name"]))[-1]["ImageId"])

    def instances(self) -> list[Instance]:
        """Every instance, managed or not."""
        return self.ec2.describe(managed_only=False)

    def run_unmanaged(self, instance_type: str = "g5.xlarge") -> str:
        """An instance someone started by hand (no gpuconsole tags); gpuconsole must leave it alone."""
        reply = self.raw.run_instances(ImageId=self.ubuntu_ami(), InstanceType=instance_type, MinCount=1, MaxCount=1,
                                       TagSpecifications=[{"ResourceType": "instance",
                                                           "Tags": [{"Key": "Name", "Value": "by-hand"}]}])
        return str(reply["Instances"][0]["InstanceId"])

    def terminate_out_of_band(self, instance_id: str) -> None:
        """What a spot reclaim or someone in the AWS console does."""
        self.raw.terminate_instances(InstanceIds=[instance_id])


__all__ = ["DEMO_TYPES", "LOCAL_EMULATOR_KEY", "Ec2Emulator"]
