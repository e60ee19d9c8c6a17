"""Development stand-ins, kept out of the installed product (the wheel and the daemon image):
a Kubernetes API stand-in (:mod:`keygate_dev.devcluster`) and a driver-side gRPC client
(:mod:`keygate_dev.driver_client`). ``keygate demo``, the tests and the benchmarks use them from a
source checkout."""
