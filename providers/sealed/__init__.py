"""The sealed backend, as a package: ``envelope`` (the sealed-value format), ``params`` (the SPC
schema), ``backend`` (opening values with the node's keys)."""
