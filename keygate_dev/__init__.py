"""Development stand-ins, kept out of the installed product (the wheel and the daemon image):
a Kubernetes API stand-in (:mod:`keygate_dev.devcluster`), a driver-side gRPC client
(:mod:`keygate_dev.driver_client`), an in-process daemon thread (:mod:`keygate_dev.embedded`)
and the body of ``keygate demo`` (:mod:`keygate_dev.demo`). The demo, the tests and the
benchmarks use them from a source checkout."""
