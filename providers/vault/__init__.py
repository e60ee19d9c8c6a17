"""The Vault (and OpenBao) backend, as a package: ``params`` (the SPC schema), ``transport``
(deadline-abortable HTTP), ``client`` (one Vault HTTP exchange and its answers), ``auth`` (the
pod's login and token renewal), ``objects`` (reads and file contents), ``backend`` (orchestration).
"""
