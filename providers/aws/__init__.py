"""The AWS backend (Secrets Manager, SSM Parameter Store), as a package: ``params`` (the SPC schema
and object plans), ``auth`` (the pod's STS credentials), ``client`` (boto3 calls and error
mapping), ``objects`` (files from values, JMESPath), ``backend`` (orchestration)."""
