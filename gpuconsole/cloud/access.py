"""`doctor`'s `[cloud.aws]` row: do the credentials open the configured EC2 endpoint?"""

from __future__ import annotations

from gpuconsole.config import AwsConfig


def check_access(aws: AwsConfig) -> str:
    """One cheap authenticated call (DescribeRegions of the configured region) against the
    configured endpoint; the detail line on success, else the classified one-line error (no
    credentials or an unknown region 2, refused credentials or no endpoint 5, …)."""
    from gpuconsole.cloud.ec2 import Ec2, classify_aws_error

    # A check, not a job: one try, no backoff. No credentials, an unknown profile or region:
    # ConfigError before any request.
    ec2 = Ec2(aws, attempts=1)
    try:
        ec2.client.describe_regions(RegionNames=[aws.region])
    except Exception as exc:
        raise classify_aws_error(exc, "describe_regions") from None
    return f"{aws.region} at {aws.endpoint_url or 'AWS'}: credentials accepted"
