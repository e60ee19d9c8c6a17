"""The GCP Secret Manager backend, as a package: ``params`` (the SPC schema), ``settings`` (the
daemon settings), ``auth`` (workload identity, key files, ADC), ``client`` (Secret Manager reads
and error mapping), ``backend`` (orchestration)."""
