"""The Azure Key Vault backend, as a package: ``params`` (the SPC schema), ``auth`` (workload
identity and service principal credentials), ``client`` (SDK calls and error mapping), ``certs``
(PKCS#12, chains, public keys), ``backend`` (orchestration)."""
