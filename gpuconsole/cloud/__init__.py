"""EC2 burst: the only package that imports boto3 (always inside functions, so importing it is cheap)."""
