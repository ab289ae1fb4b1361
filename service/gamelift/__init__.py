"""GameLift itself: the aioboto3 client, and every botocore failure classified once."""
