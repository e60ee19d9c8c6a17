"""``encoding`` / ``objectEncoding``: how a backend's text value becomes the file's bytes."""

from __future__ import annotations

import base64
import binascii

from provider.errors import InvalidSPC

ENCODINGS = ("utf-8", "base64", "hex")


def decode(text: str, encoding: str, failure: str) -> bytes:
    """``text`` as utf-8 bytes, or base64/hex-decoded; ``failure`` is the message when it is not.

    The value itself never reaches the message (it is a secret).
    """
    try:
        if encoding == "base64":
            return base64.b64decode(text.strip(), validate=True)
        if encoding == "hex":
            return bytes.fromhex(text.strip())
    except (binascii.Error, ValueError):
        raise InvalidSPC(failure) from None
    return text.encode()
