"""EC2 through boto3: list, launch, stop and terminate gpuconsole-managed instances.

Every AWS failure becomes a one-line GpuConsoleError with the contract's exit code. Only instances
tagged `gpuconsole:managed=true` are ever stopped or terminated. Calls are synchronous; async callers
run them in a thread.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from gpuconsole.cloud.prices import price_per_hour
from gpuconsole.config import AwsConfig
from gpuconsole.errors import (
    ConfigError,
    GpuConsoleError,
    NoCapacityError,
    NotFoundError,
    PermissionDeniedError,
    UnreachableError,
    UsageError,
)
from gpuconsole.model.cloud import MANAGED_TAG, OWNER_TAG, Instance

# An emulator on loopback (moto) accepts any key; real AWS never gets these.
LOCAL_EMULATOR_KEY = ("gpuconsole-local", "gpuconsole-local-secret")

_CAPACITY_CODES = {
    "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow", "InsufficientCapacity",
}
_AUTH_CODES = {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
               "UnrecognizedClientException"}


def is_loopback_endpoint(endpoint_url: str | None) -> bool:
    """True for http(s)://127.x / [::1] / localhost endpoints (emulators)."""
    if not endpoint_url:
        return False
    host = urlparse(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def classify_aws_error(exc: BaseException, what: str) -> GpuConsoleError:
    """Map a botocore failure to a one-line error with the right exit code (never the credentials)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError("AWS: no credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
                           "or run `aws configure`)")
    if isinstance(exc, EndpointConnectionError):
        return UnreachableError(f"AWS: cannot reach the EC2 endpoint ({exc.kwargs.get('endpoint_url', '?')})")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        text = f"AWS {what}: {code}: {message}" if message else f"AWS {what}: {code}"
        if code in _CAPACITY_CODES:
            return NoCapacityError(text)
        if code in _AUTH_CODES:
            return UnreachableError(text + " (check your AWS credentials)")
        if code == "UnauthorizedOperation" or code.endswith("AccessDenied"):
            return PermissionDeniedError(text)
        if code.startswith("InvalidAMIID"):
            return ConfigError(f"{text} (check [cloud.aws] ami for this region)")
        if code in ("InvalidInstanceType", "Unsupported") or code.startswith("InvalidParameter"):
            return UsageError(text)
        if code.startswith("InvalidInstanceID"):
            return NotFoundError(text)
        if code.startswith(("InvalidSubnet", "InvalidGroup", "InvalidKeyPair")):
            return ConfigError(text)
        return GpuConsoleError(text)
    from botocore.exceptions import BotoCoreError

    if isinstance(exc, BotoCoreError):
        return UnreachableError(f"AWS {what}: {exc}")
    return GpuConsoleError(f"AWS {what}: {exc.__class__.__name__}: {exc}")


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else time.time()


# EC2 says when a stop or termination began only in this text: "User initiated (2026-12-01 04:50:44
# GMT)" (moto writes UTC); there is no field for it.
_TRANSITION_AT = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")


def ended_at_s(raw: dict[str, Any]) -> float | None:
    """When a stopped, stopping, shutting-down or terminated instance stopped running (epoch s), or None."""
    if str(raw.get("State", {}).get("Name")) in ("pending", "running"):
        return None
    found = _TRANSITION_AT.search(str(raw.get("StateTransitionReason") or ""))
    if found is None:
        return None
    return datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


class Ec2:
    """One region's EC2 API with gpuconsole's rules: tags, managed-only mutations, clear errors."""

    def __init__(self, aws: AwsConfig, attempts: int = 3) -> None:
        """`attempts`: tries per call (botocore's standard retries with backoff); a check asks once."""
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import ProfileNotFound

        self.aws = aws
        self.prices = dict(aws.prices)
        try:
            session = boto3.session.Session(region_name=aws.region)
        except ProfileNotFound as exc:
            raise ConfigError(f"AWS: {exc} (check AWS_PROFILE)") from None
        regions: set[str] = set()
        for partition in session.get_available_partitions():
            regions.update(session.get_available_regions("ec2", partition_name=partition))
        if aws.region not in regions:
            raise ConfigError(f"[cloud.aws] region: {aws.region!r} is not an EC2 region")
        kwargs: dict[str, Any] = {}
        if session.get_credentials() is None:
            if not is_loopback_endpoint(aws.endpoint_url):
                from botocore.exceptions import NoCredentialsError

                raise classify_aws_error(NoCredentialsError(), "credentials")
            kwargs = {"aws_access_key_id": LOCAL_EMULATOR_KEY[0], "aws_secret_access_key": LOCAL_EMULATOR_KEY[1]}
        self.client = session.client(
            "ec2", endpoint_url=aws.endpoint_url,
            config=BotoConfig(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=5,
                              read_timeout=30),
            **kwargs,
        )
        self._gpus: dict[str, int] = {}

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:
            raise classify_aws_error(exc, what) from None

    # -- reads ---------------------------------------------------------------------------------

    def gpu_counts(self, types: list[str]) -> dict[str, int]:
        """GPUs per instance type from describe_instance_types (cached; 0 for non-GPU types)."""
        todo = sorted({t for t in types if t not in self._gpus})
        for start in range(0, len(todo), 100):
            reply = self._call("describe_instance_types", "describe_instance_types",
                               InstanceTypes=todo[start:start + 100])
            for info in reply.get("InstanceTypes", []):
                gpus = sum(int(g.get("Count", 0)) for g in info.get("GpuInfo", {}).get("Gpus", []))
                self._gpus[str(info["InstanceType"])] = gpus
        return {t: self._gpus.get(t, 0) for t in types}

    def check_image(self) -> None:
        """The configured AMI exists in this region (moto and AWS both answer InvalidAMIID.NotFound)."""
        if not self.aws.ami:
            raise ConfigError("[cloud.aws] ami: is required to launch instances")
        self._call("check ami", "describe_images", ImageIds=[self.aws.ami])

    def console_host_keys(self, instance_id: str) -> list[str]:
        """The host keys cloud-init printed on the instance's console (empty until it has)."""
        from gpuconsole.cloud.hostkeys import parse_console_host_keys

        reply = self._call("get_console_output", "get_console_output", InstanceId=instance_id, Latest=True)
        return parse_console_host_keys(str(reply.get("Output") or ""))

    def _to_instance(self, raw: dict[str, Any]) -> Instance:
        tags = {t.get("Key"): t.get("Value") for t in raw.get("Tags", [])}
        itype = str(raw.get("InstanceType", "?"))
        spot = raw.get("InstanceLifecycle") == "spot"
        return Instance(
            id=str(raw["InstanceId"]),
            type=itype,
            state=str(raw.get("State", {}).get("Name", "unknown")),
            spot=spot,
            gpus=self._gpus.get(itype),
            price_per_hour=price_per_hour(itype, spot, self.prices),
            launched_at_s=_epoch(raw.get("LaunchTime")),
            managed=tags.get(MANAGED_TAG) == "true",
            owner=tags.get(OWNER_TAG),
            public_ip=raw.get("PublicIpAddress"),
            private_ip=raw.get("PrivateIpAddress"),
            ended_at_s=ended_at_s(raw),
        )

    def describe(self, ids: list[str] | None = None, *, managed_only: bool = True,
                 states: tuple[str, ...] | None = None) -> list[Instance]:
        """Instances (managed ones by default), oldest launch first."""
        filters: list[dict[str, Any]] = []
        if managed_only:
            filters.append({"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]})
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        kwargs: dict[str, Any] = {"Filters": filters} if filters else {}
        if ids:
            kwargs["InstanceIds"] = ids
        raws: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._call("describe_instances", "describe_instances",
                              **kwargs, **({"NextToken": token} if token else {}))
            for reservation in page.get("Reservations", []):
                raws.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                break
        self.gpu_counts([str(r.get("InstanceType", "?")) for r in raws])
        instances = [self._to_instance(r) for r in raws]
        return sorted(instances, key=lambda i: (i.launched_at_s, i.id))

    # -- mutations -----------------------------------------------------------------------------

    def launch(self, instance_type: str, *, spot: bool, count: int, owner: str) -> list[Instance]:
        """run_instances with the managed and owner tags; a ClientToken makes a retry idempotent."""
        self.check_image()
        tags = [{"Key": MANAGED_TAG, "Value": "true"}, {"Key": OWNER_TAG, "Value": owner},
                {"Key": "Name", "Value": f"gpuconsole-{owner}"}]
        kwargs: dict[str, Any] = {
            "ImageId": self.aws.ami, "InstanceType": instance_type, "MinCount": count, "MaxCount": count,
            "ClientToken": uuid.uuid4().hex,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        if self.aws.key_name:
            kwargs["KeyName"] = self.aws.key_name
        if self.aws.subnet_id:
            kwargs["SubnetId"] = self.aws.subnet_id
        if self.aws.security_group_ids:
            kwargs["SecurityGroupIds"] = list(self.aws.security_group_ids)
        if spot:
            kwargs["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        reply = self._call("run_instances", "run_instances", **kwargs)
        self.gpu_counts([instance_type])
        return [self._to_instance(raw) for raw in reply.get("Instances", [])]

    def managed(self, ids: list[str]) -> list[Instance]:
        """The instances named, refusing any that gpuconsole does not manage (exit 4) or that do not exist."""
        found = {i.id: i for i in self.describe(ids, managed_only=False)}
        for instance_id in ids:
            if instance_id not in found:
                raise NotFoundError(f"no instance {instance_id!r} in {self.aws.region}")
            if not found[instance_id].managed:
                raise PermissionDeniedError(
                    f"{instance_id} is not managed by gpuconsole (no {MANAGED_TAG} tag); not touching it"
                )
        return [found[i] for i in ids]

    def terminate(self, ids: list[str]) -> list[Instance]:
        instances = self.managed(ids)
        self._call("terminate_instances", "terminate_instances", InstanceIds=ids)
        return instances

    def stop(self, ids: list[str]) -> list[Instance]:
        instances = self.managed(ids)
        self._call("stop_instances", "stop_instances", InstanceIds=ids)
        return instances
