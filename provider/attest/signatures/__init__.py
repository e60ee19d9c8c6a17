"""Image signatures in the release policy: cosign key-based and Sigstore keyless.

``requirements`` parses what the policy asks for; ``registry`` reads signature artifacts from
the image's registry; ``cosign`` and ``keyless`` verify them; ``checker`` ties these together
per Mount with a bounded cache of verified (image, requirement) pairs.
"""
