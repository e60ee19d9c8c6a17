"""What every backend shares, written once: the declared SPC schema and its walk, typed readers,
``encoding`` decoding, key extraction, pod token lookup, error classification, runtime pools,
retries and client caches."""
